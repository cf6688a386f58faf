// Package mem is an in-memory chunk store, for unit tests and as the
// reference the conformance suite is written against.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Store keeps blobs in a map.
type Store struct {
	mu    sync.RWMutex
	blobs map[digest.ID][]byte
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{blobs: map[digest.ID][]byte{}} }

func (s *Store) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	s.mu.RLock()
	b, ok := s.blobs[id]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", id.Short(), store.ErrNotFound)
	}
	if err := store.Verify(s, id, b); err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

func (s *Store) Has(ctx context.Context, id digest.ID) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.blobs[id]
	return ok, nil
}

func (s *Store) Put(ctx context.Context, id digest.ID, blob []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.blobs[id]; !ok {
		s.blobs[id] = bytes.Clone(blob)
	}
	return nil
}

// Replace stores blob under id in place of the blob stored there, if any
// (store.Replacer).
func (s *Store) Replace(ctx context.Context, id digest.ID, blob []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[id] = bytes.Clone(blob)
	return nil
}

func (s *Store) Delete(ctx context.Context, id digest.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.blobs, id)
	return nil
}

func (s *Store) List(ctx context.Context, fn func(digest.ID) error) error {
	s.mu.RLock()
	ids := make([]digest.ID, 0, len(s.blobs))
	for id := range s.blobs {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	for _, id := range ids {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

// Corrupt overwrites the stored blob under id without any check, so tests
// can play a store whose disk rotted.
func (s *Store) Corrupt(id digest.ID, blob []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[id] = bytes.Clone(blob)
}

func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.blobs)
}

func (s *Store) String() string { return "mem:" }
func (s *Store) Close() error   { return nil }
