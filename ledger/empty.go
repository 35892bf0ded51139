package ledger

import (
	"context"
	"time"
)

// Empty is a ledger with no rotations, locks or events that refuses every
// change: what --dry-run reads when no ledger file exists yet, so that a
// rehearsal creates none.
func Empty() Ledger { return empty{} }

type empty struct{}

func (empty) Admit(context.Context, AdmitRequest) (Rotation, error) {
	return Rotation{}, ErrReadOnly
}
func (empty) Start(context.Context, Rotation) (Rotation, error) { return Rotation{}, ErrReadOnly }
func (empty) Update(context.Context, string, func(*Rotation) error) (Rotation, error) {
	return Rotation{}, ErrReadOnly
}
func (empty) Get(context.Context, string) (Rotation, error)    { return Rotation{}, ErrNotFound }
func (empty) List(context.Context, Filter) ([]Rotation, error) { return nil, nil }
func (empty) Pending(context.Context) ([]Rotation, error)      { return nil, nil }
func (empty) CountSince(context.Context, string, string, time.Time) (int, error) {
	return 0, nil
}
func (empty) Lock(context.Context, string, string, time.Duration) (Lock, error) {
	return Lock{}, ErrReadOnly
}
func (empty) Unlock(context.Context, string, string) error { return ErrReadOnly }
func (empty) BreakLock(context.Context, string, string, bool) (Lock, error) {
	return Lock{}, ErrReadOnly
}
func (empty) Locks(context.Context) ([]Lock, error)           { return nil, nil }
func (empty) Record(context.Context, Event) (Event, error)    { return Event{}, ErrReadOnly }
func (empty) Events(context.Context, string) ([]Event, error) { return nil, nil }
func (empty) Close() error                                    { return nil }
