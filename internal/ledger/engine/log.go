package engine

import (
	"context"
	"log/slog"

	cmtlog "github.com/cometbft/cometbft/libs/log"
)

// cmtLogger hands CometBFT's log lines to a *slog.Logger.
//
// CometBFT logs at Info on every block and step ("finalizing commit",
// "executed block", "committed state") and at Error for faults a BFT
// network expects and survives (a peer that went away, a dial that failed
// while a validator restarts). Passed through as they are, they would drown
// the embedding process's log, so each is lowered one level: Info becomes
// Debug and Error becomes Warn. The engine logs its own events (start, stop,
// replay) at Info.
type cmtLogger struct {
	l *slog.Logger
}

var _ cmtlog.Logger = cmtLogger{}

func (c cmtLogger) Debug(msg string, keyvals ...any) {
	c.log(slog.LevelDebug, msg, keyvals)
}

func (c cmtLogger) Info(msg string, keyvals ...any) {
	c.log(slog.LevelDebug, msg, keyvals)
}

func (c cmtLogger) Error(msg string, keyvals ...any) {
	c.log(slog.LevelWarn, msg, keyvals)
}

func (c cmtLogger) With(keyvals ...any) cmtlog.Logger {
	return cmtLogger{l: c.l.With(keyvals...)}
}

func (c cmtLogger) log(level slog.Level, msg string, keyvals []any) {
	ctx := context.Background()
	if !c.l.Enabled(ctx, level) {
		return
	}
	c.l.Log(ctx, level, msg, keyvals...)
}
