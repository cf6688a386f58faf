package ledgerclient

import (
	"context"
	"errors"
	"fmt"

	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/spec"
)

// TwinSource gives twins by id: a *Client, or a server reading its own
// ledger. A twin it does not hold wraps ledger.ErrNotFound.
type TwinSource interface {
	Twin(ctx context.Context, id uint32) (ledger.TwinView, error)
}

var _ TwinSource = (*Client)(nil)

// Approvals checks a contract's approvals the way its node does
// (ContractView.Verify, with the keys of the twins its requirement lists,
// read from ts) and returns what spec.Verify found: the weight reached and
// required, the required twins still missing, the approvals that do not
// count. A requirement not met is not an error here; it is Result.Met.
//
// To check a pending revision, pass a view of it:
// &ledger.ContractView{Spec: r.Spec, Approvals: r.Approvals}.
func Approvals(ctx context.Context, ts TwinSource, cv *ledger.ContractView) (spec.Result, error) {
	d, err := cv.Deployment()
	if err != nil {
		return spec.Result{}, err
	}
	twins := map[uint32]ledger.TwinView{}
	add := func(id uint32) error {
		if _, ok := twins[id]; ok || id == 0 {
			return nil
		}
		t, err := ts.Twin(ctx, id)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			return nil // its approvals count for nothing: spec.Verify says why
		case err != nil:
			return fmt.Errorf("twin %d: %w", id, err)
		}
		twins[id] = t
		return nil
	}
	for _, q := range d.Requirement.Requests {
		if err := add(q.Twin); err != nil {
			return spec.Result{}, err
		}
	}
	r, err := cv.Verify(twins)
	if err != nil && !errors.Is(err, spec.ErrSignature) {
		return r, err
	}
	return r, nil
}
