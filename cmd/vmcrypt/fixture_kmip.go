package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/fixtures"
)

// fixtureKMSKey makes the KEK of a `--provider kms` fixture on the KMS
// the KMIP options name (Create AES-256, then Activate, as vCenter does),
// so that the VM's fqid key id is the KMS's Unique Identifier and the VM
// opens with --kmip. Without KMIP options it does nothing: the KEK is
// seeded and written to kek.json. The caller zeroes r.KMS.Key.
func fixtureKMSKey(c *cli.Context, r *fixtures.Recipe) error {
	o, err := kmipOptionsFrom(c)
	if err != nil || o == nil {
		return err
	}
	if r.Provider != fixtures.ProviderKMS {
		return usagef("fixture: --kmip makes the KEK of a --provider kms fixture, not of --provider %s", r.Provider)
	}
	if r.Negative == fixtures.NegOtherKEK {
		return usagef("fixture: --negative %s changes kek.json, which a fixture whose KEK is on a KMS does not have", r.Negative)
	}
	cl, warns, err := newKMIPClient(o)
	if err != nil {
		return err
	}
	defer cl.Close()
	for _, w := range warns {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s: %s\n", o.certFile, w)
	}
	uid, err := cl.CreateAES256(c.Context)
	if err != nil {
		return fmt.Errorf("fixture: creating the KEK on the KMS: %w", err)
	}
	if err := cl.Activate(c.Context, uid); err != nil {
		return fmt.Errorf("fixture: activating KMS key %s: %w", uid, err)
	}
	k, err := cl.Get(c.Context, uid)
	if err != nil {
		return fmt.Errorf("fixture: reading back KMS key %s: %w", uid, err)
	}
	provider := o.provider
	if provider == "" {
		provider = fixtures.KMSProvider
	}
	r.KMS = &fixtures.KMSKey{Provider: provider, KeyID: uid, Servers: o.servers, Key: k.Material}
	fmt.Fprintf(c.App.ErrWriter, "note: the KEK is KMS key %s (provider %q) on %v: the fixture opens with the same --kmip options\n", uid, provider, o.servers)
	return nil
}
