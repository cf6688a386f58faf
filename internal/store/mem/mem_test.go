package mem

import (
	"testing"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) store.Store { return New() },
		Corrupt: func(t *testing.T, s store.Store, id digest.ID, blob []byte) {
			s.(*Store).Corrupt(id, blob)
		},
	})
}
