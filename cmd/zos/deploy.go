package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/node/nodeclient"
)

// nodeFlags are the flags of the commands that talk to a node.
type nodeFlags struct {
	url, keyFile string
	json         bool
}

func (f *nodeFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.url, "node", envOr("ZOS_NODE", "http://127.0.0.1:8070"), "the node's API (default $ZOS_NODE or http://127.0.0.1:8070)")
	c.Flags().StringVar(&f.keyFile, "key", os.Getenv("ZOS_KEY"), "your twin's secret key file, which signs the request (default $ZOS_KEY)")
	c.Flags().BoolVar(&f.json, "json", false, "print the result as JSON")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (f *nodeFlags) client() (*nodeclient.Client, error) {
	if f.keyFile == "" {
		return nil, &exitError{exitUsage, errors.New("every node request is signed: pass --key FILE or set ZOS_KEY (make one with 'zos key gen FILE')")}
	}
	s, err := key.Load(f.keyFile)
	if err != nil {
		return nil, err
	}
	return newNodeClient(f.url, s)
}

func newNodeClient(url string, s key.Secret) (*nodeclient.Client, error) {
	c, err := nodeclient.New(url, s)
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	return c, nil
}

func deploymentArg(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, &exitError{exitUsage, fmt.Errorf("deployment id %q: want a number", s)}
	}
	return id, nil
}

func deployCmd() *cobra.Command {
	var f nodeFlags
	var update uint64
	var wait time.Duration
	c := &cobra.Command{
		Use:   "deploy SPEC [--node URL] --key K [--update ID] [--wait DURATION]",
		Short: "Send a signed deployment to a node",
		Long: `Send a deployment spec, signed with 'zos sign', to a node. The node checks
the spec, that the request comes from the owner's key, and that the
signature requirement is met, then answers with the deployment's id and
works in the background. --update ID replaces a deployment with a higher
version of its spec. --wait waits until every workload runs (exit 1 if one
failed or the time ran out).`,
		Args: usageArgs(1, "one SPEC file"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client()
			if err != nil {
				return err
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			ctx := c.Context()
			var d nodeclient.Deployed
			if update != 0 {
				d, err = cl.Update(ctx, update, b)
			} else {
				d, err = cl.Deploy(ctx, b)
			}
			if err != nil {
				return nodeErr(err)
			}
			var st *nodeclient.Status
			if wait > 0 {
				s, werr := waitRunning(ctx, cl, d.ID, wait, func(s nodeclient.Status) {
					if !f.json {
						fmt.Fprintf(c.ErrOrStderr(), "%s\n", depSummary(s))
					}
				})
				st, err = &s, werr
			}
			out := c.OutOrStdout()
			if f.json {
				if perr := printJSON(out, map[string]any{"deployment": d, "status": st}); perr != nil {
					return perr
				}
			} else {
				fmt.Fprintf(out, "deployment %d version %d accepted (challenge %s)\n", d.ID, d.Version, d.Challenge)
				if st != nil {
					printStatus(out, *st)
				}
			}
			return err
		},
	}
	f.add(c)
	c.Flags().Uint64Var(&update, "update", 0, "replace deployment ID with this higher version")
	c.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for every workload to run")
	return c
}

// waitRunning polls deployment id until every workload runs or is in
// place, a workload failed, or wait passes.
func waitRunning(ctx context.Context, cl *nodeclient.Client, id uint64, wait time.Duration, progress func(nodeclient.Status)) (nodeclient.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	last := ""
	for {
		s, err := cl.Get(ctx, id)
		if err != nil {
			return s, nodeErr(err)
		}
		if sum := depSummary(s); sum != last {
			progress(s)
			last = sum
		}
		done, failed := true, ""
		for _, w := range s.Workloads {
			switch w.State {
			case nodeclient.WorkloadRunning, nodeclient.WorkloadOK:
			case nodeclient.WorkloadFailed:
				failed = w.Name + ": " + w.Detail
			default:
				done = false
			}
		}
		if failed != "" {
			return s, fmt.Errorf("deployment %d: %s", id, failed)
		}
		if done {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("deployment %d not running after %s (see 'zos status %d')", id, wait, id)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func depSummary(s nodeclient.Status) string {
	parts := make([]string, len(s.Workloads))
	for i, w := range s.Workloads {
		parts[i] = w.Name + "=" + w.State
	}
	return fmt.Sprintf("deployment %d: %s", s.ID, strings.Join(parts, " "))
}

func printStatus(out io.Writer, s nodeclient.Status) {
	fmt.Fprintf(out, "deployment %d  owner %d  version %d  %s  accepted %s\n", s.ID, s.Owner, s.Version, s.State, s.Accepted.Format(time.RFC3339))
	for _, w := range s.Workloads {
		line := fmt.Sprintf("  %-16s %-9s %-10s", w.Name, w.Kind, w.State)
		if len(w.IPs) > 0 {
			line += " " + strings.Join(w.IPs, ",")
		}
		if w.Restarts > 0 {
			line += fmt.Sprintf(" restarts=%d", w.Restarts)
		}
		if w.ExitCode != nil {
			line += fmt.Sprintf(" last-exit=%d", *w.ExitCode)
		}
		if w.OOMKilled {
			line += " oom-killed"
		}
		if w.Detail != "" {
			line += "  " + w.Detail
		}
		fmt.Fprintln(out, line)
	}
}

// nodeErr maps a signature refusal to its exit status.
func nodeErr(err error) error {
	var se *nodeclient.StatusError
	if errors.As(err, &se) && (se.Code == 401 || se.Code == 403) {
		return &exitError{exitSignature, err}
	}
	return err
}

func statusCmd() *cobra.Command {
	var f nodeFlags
	var events bool
	c := &cobra.Command{
		Use:   "status [ID] [--node URL] --key K [--events] [--json]",
		Short: "Show your deployments on a node (one, with ID), with --events their history",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client()
			if err != nil {
				return err
			}
			ctx, out := c.Context(), c.OutOrStdout()
			var list []nodeclient.Status
			if len(args) == 1 {
				id, err := deploymentArg(args[0])
				if err != nil {
					return err
				}
				s, err := cl.Get(ctx, id)
				if err != nil {
					return nodeErr(err)
				}
				list = []nodeclient.Status{s}
			} else if list, err = cl.List(ctx); err != nil {
				return nodeErr(err)
			}
			evs := map[uint64][]nodeclient.Event{}
			if events {
				for _, s := range list {
					if evs[s.ID], err = cl.Events(ctx, s.ID); err != nil {
						return nodeErr(err)
					}
				}
			}
			if f.json {
				if len(args) == 1 && !events {
					return printJSON(out, list[0])
				}
				return printJSON(out, map[string]any{"deployments": list, "events": evs})
			}
			for _, s := range list {
				printStatus(out, s)
				for _, e := range evs[s.ID] {
					fmt.Fprintf(out, "    %s %-16s %s %s\n", e.Time.Format(time.RFC3339), e.Kind, e.Workload, e.Detail)
				}
			}
			return nil
		},
	}
	f.add(c)
	c.Flags().BoolVar(&events, "events", false, "also print each deployment's records of the node's history")
	return c
}

func logsCmd() *cobra.Command {
	var f nodeFlags
	var tail int64
	c := &cobra.Command{
		Use:   "logs ID CONTAINER [--node URL] --key K [--tail BYTES]",
		Short: "Print a container's stdout and stderr",
		Args:  usageArgs(2, "a deployment ID and a container name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client()
			if err != nil {
				return err
			}
			id, err := deploymentArg(args[0])
			if err != nil {
				return err
			}
			b, err := cl.Logs(c.Context(), id, args[1], tail)
			if err != nil {
				return nodeErr(err)
			}
			_, err = c.OutOrStdout().Write(b)
			return err
		},
	}
	f.add(c)
	c.Flags().Int64Var(&tail, "tail", 0, "only the last BYTES bytes")
	return c
}

func deleteCmd() *cobra.Command {
	var f nodeFlags
	var wait time.Duration
	c := &cobra.Command{
		Use:   "delete ID [--node URL] --key K [--wait DURATION]",
		Short: "Delete a deployment: its containers, networks, volumes and gateway names go",
		Args:  usageArgs(1, "a deployment ID"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client()
			if err != nil {
				return err
			}
			id, err := deploymentArg(args[0])
			if err != nil {
				return err
			}
			ctx := c.Context()
			if err := cl.Delete(ctx, id); err != nil {
				return nodeErr(err)
			}
			deadline := time.Now().Add(wait)
			for wait > 0 {
				s, err := cl.Get(ctx, id)
				if err != nil {
					return nodeErr(err)
				}
				if s.State == nodeclient.StateDeleted {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("deployment %d still %s after %s", id, s.State, wait)
				}
				time.Sleep(300 * time.Millisecond)
			}
			fmt.Fprintf(c.OutOrStdout(), "deployment %d deleted\n", id)
			return nil
		},
	}
	f.add(c)
	c.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for everything to be gone")
	return c
}
