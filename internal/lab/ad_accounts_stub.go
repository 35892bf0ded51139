package lab

import "context"

// Placeholders until the AD realm lands (the AD branch deletes this file).

func (r *Realm) adAddComputer(ctx context.Context, name string) (string, error) {
	return "", errADNotBuilt
}
func (r *Realm) adAddSPN(ctx context.Context, account, spn string) error { return errADNotBuilt }
