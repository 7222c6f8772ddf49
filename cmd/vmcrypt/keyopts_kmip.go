package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip"
)

// KMIP key options: a Standard Key Provider's KMS asked for the KEKs
// (recover/keys/kmip). The client key is a secret: a file, never argv.
// One client (one TLS connection, one answer per key id) serves the whole
// command, and is closed (the keys it fetched zeroed) when the command
// ends (closeKeySources, from runContext).

func kmipFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "kmip", Usage: "KMIP server `HOST:PORT` of a Standard Key Provider (KMS; port 5696 if left out); repeatable: the cluster's members, tried in order"},
		&cli.StringFlag{Name: "kmip-cert", Usage: "client certificate `FILE` (PEM) the KMS knows vmcrypt by (extended key usage clientAuth)"},
		&cli.StringFlag{Name: "kmip-key", Usage: "the client certificate's private key `FILE` (PEM, not encrypted; a secret: a file, never an argument)"},
		&cli.StringFlag{Name: "kmip-ca", Usage: "CA certificate `FILE` (PEM) that signs the KMS's server certificates (always verified)"},
		&cli.StringFlag{Name: "kmip-provider", Usage: "key provider `NAME` the KMS answers for (default: any Standard Key Provider)"},
		&cli.DurationFlag{Name: "kmip-timeout", Usage: "bound on one request to one KMS server (`DURATION`, default 10s)"},
		&cli.StringFlag{Name: "kmip-config", Usage: "KMIP provider, servers, certificate, key, CA and timeout from a JSON `FILE` (docs: README, KMIP configuration file)"},
	}
}

// kmipOptions are the KMIP options, checked.
type kmipOptions struct {
	servers                   []string
	certFile, keyFile, caFile string
	provider                  string
	timeout                   time.Duration
}

// kmipGiven reports whether any KMIP option was given.
func kmipGiven(c *cli.Context) bool {
	for _, f := range []string{"kmip", "kmip-cert", "kmip-key", "kmip-ca", "kmip-provider", "kmip-timeout", "kmip-config"} {
		if c.IsSet(f) {
			return true
		}
	}
	return false
}

// kmipOptionsFrom reads and checks the KMIP options (nil when none was
// given). Wrong combinations are usage errors (exit 2); a configuration
// file that does not parse is a *kmip.ConfigError (exit 2 too).
func kmipOptionsFrom(c *cli.Context) (*kmipOptions, error) {
	if !kmipGiven(c) {
		return nil, nil
	}
	if k := c.String("kmip-key"); strings.Contains(k, "-----BEGIN") || strings.Contains(k, "PRIVATE KEY") {
		// Never echo it: it looks like the key itself.
		return nil, usagef("--kmip-key takes the FILE that holds the client key, not the key itself (the value given was not printed)")
	}
	o := &kmipOptions{provider: c.String("kmip-provider"), timeout: c.Duration("kmip-timeout")}
	if c.IsSet("kmip-timeout") && (o.timeout <= 0 || o.timeout > kmip.MaxTimeout) {
		return nil, usagef("--kmip-timeout %v: want a duration above 0 and at most %v", o.timeout, kmip.MaxTimeout)
	}
	if c.IsSet("kmip-provider") {
		if p := o.provider; p == "" || strings.ContainsAny(p, "/\x00") || strings.TrimSpace(p) != p {
			return nil, usagef("--kmip-provider %q is not a key provider name (non-empty, no '/', no surrounding spaces)", p)
		}
	}
	if cf := c.String("kmip-config"); cf != "" {
		var both []string
		for _, f := range []string{"kmip", "kmip-cert", "kmip-key", "kmip-ca"} {
			if c.IsSet(f) {
				both = append(both, "--"+f)
			}
		}
		if len(both) > 0 {
			return nil, usagef("--kmip-config names the servers, certificate, key and CA: drop %s (or drop --kmip-config)", strings.Join(both, ", "))
		}
		fc, err := kmip.LoadConfigFile(cf)
		if err != nil {
			return nil, err
		}
		if fc.Provider != "" && o.provider != "" && fc.Provider != o.provider {
			return nil, usagef("--kmip-provider %q differs from the provider %q of %s", o.provider, fc.Provider, cf)
		}
		if o.provider == "" {
			o.provider = fc.Provider
		}
		if o.timeout == 0 {
			o.timeout = fc.Timeout
		}
		o.servers, o.certFile, o.keyFile, o.caFile = fc.Addrs(), fc.CertFile, fc.KeyFile, fc.CAFile
		return o, nil
	}
	raw := c.StringSlice("kmip")
	if len(raw) == 0 {
		return nil, usagef("the KMIP options need the KMS: --kmip HOST:PORT (repeatable) or --kmip-config FILE")
	}
	var missing []string
	for _, f := range []string{"kmip-cert", "kmip-key", "kmip-ca"} {
		if c.String(f) == "" {
			missing = append(missing, "--"+f)
		}
	}
	if len(missing) > 0 {
		return nil, usagef("--kmip needs --kmip-cert, --kmip-key and --kmip-ca (missing: %s)", strings.Join(missing, ", "))
	}
	if len(raw) > kmip.MaxServers {
		return nil, usagef("--kmip is given %d times (the limit is %d)", len(raw), kmip.MaxServers)
	}
	for _, s := range raw {
		a, err := kmip.NormalizeAddr(s)
		if err != nil {
			return nil, usagef("--kmip %q is not HOST:PORT (%v)", s, err)
		}
		if slices.Contains(o.servers, a) {
			return nil, usagef("--kmip %s is given twice", a)
		}
		o.servers = append(o.servers, a)
	}
	o.certFile, o.keyFile, o.caFile = c.String("kmip-cert"), c.String("kmip-key"), c.String("kmip-ca")
	return o, nil
}

// newKMIPClient loads the certificate, key and CA files and returns a
// client (not yet connected) and what may make a KMS refuse the client
// certificate (printed as warnings).
func newKMIPClient(o *kmipOptions) (*kmip.Client, []string, error) {
	cert, err := kmip.LoadKeyPair(o.certFile, o.keyFile)
	if err != nil {
		return nil, nil, err
	}
	roots, err := kmip.LoadCAs(o.caFile)
	if err != nil {
		return nil, nil, err
	}
	cl, err := kmip.NewClient(kmip.Config{Servers: o.servers, Certificate: cert, RootCAs: roots, Timeout: o.timeout})
	if err != nil {
		return nil, nil, usagef("KMIP options: %v", err)
	}
	return cl, kmip.ClientCertProblems(cert.Leaf, time.Now()), nil
}

// kmipRun is the KMIP source of one command run, kept in the app's
// Metadata so that every VM the command opens shares it.
type kmipRun struct {
	src    *keys.KMIPSource
	client *kmip.Client
}

const kmipRunKey = "vmcrypt.kmip"

// kmipSource returns the command's KMIP source (built on first use, nil
// when no KMIP option was given) and its client.
func kmipSource(c *cli.Context) (*kmipRun, error) {
	if r, ok := c.App.Metadata[kmipRunKey].(*kmipRun); ok {
		return r, nil
	}
	o, err := kmipOptionsFrom(c)
	if err != nil || o == nil {
		return nil, err
	}
	cl, warns, err := newKMIPClient(o)
	if err != nil {
		return nil, err
	}
	for _, w := range warns {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s: %s\n", o.certFile, w)
	}
	r := &kmipRun{src: keys.NewKMIPSource(cl, o.provider), client: cl}
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	c.App.Metadata[kmipRunKey] = r
	return r, nil
}

// appendKMIP adds the KMIP source, when one was asked for, after the
// other sources: a key a file holds opens without asking the KMS.
func appendKMIP(c *cli.Context, srcs []keys.Source) ([]keys.Source, error) {
	r, err := kmipSource(c)
	if err != nil || r == nil {
		return srcs, err
	}
	return append(srcs, r.src), nil
}

// closeKeySources closes what the command's key sources hold open (the
// KMIP connection) and zeroes the keys they fetched.
func closeKeySources(app *cli.App) {
	if r, ok := app.Metadata[kmipRunKey].(*kmipRun); ok {
		r.src.Close()
		delete(app.Metadata, kmipRunKey)
	}
}

// kmipHint is the flag hint for a KMIP error (ok: err is a KMS's answer
// about a key, whose hint replaces the generic missing-key one).
func kmipHint(err error) (hint string, ok bool) {
	var ke *kmip.KeyError
	if errors.As(err, &ke) {
		switch {
		case errors.Is(err, kmip.ErrPermissionDenied):
			return " (or give --kmip-cert a certificate the KMS allows)", true
		case errors.Is(err, kmip.ErrKeyNotActive):
			return " (its administrator can reactivate or export it; or give it with --kek)", true
		case errors.Is(err, kmip.ErrKeyNotAES256):
			return " (the key id names another object on this KMS: check --kmip and --kmip-provider)", true
		}
		return " (give it with --kek, or --kmip a KMS that holds it)", true
	}
	var re *kmip.ResultError
	if errors.As(err, &re) && re.Reason == kmip.ReasonAuthenticationNotSuccessful {
		return " (--kmip-cert: a certificate the KMS trusts, with extended key usage clientAuth)", false
	}
	var (
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
		oe *net.OpError
	)
	var ce *kmip.ConnError
	if !errors.As(err, &ce) {
		return "", false
	}
	switch {
	case errors.As(err, &ua):
		return " (--kmip-ca must name the CA that signs the KMS's certificate)", false
	case errors.As(err, &he):
		return " (give --kmip the name or address the KMS's certificate was issued for)", false
	case errors.As(err, &ci):
		return " (the KMS's certificate itself is refused: its administrator must renew it)", false
	case errors.As(err, &oe) && oe.Op == "remote error":
		return " (--kmip-cert must be signed by a CA the KMS trusts and have extended key usage clientAuth)", false
	case errors.Is(err, os.ErrDeadlineExceeded):
		return " (--kmip-timeout waits longer)", false
	case errors.Is(err, syscall.ECONNREFUSED):
		return " (check --kmip: another member of the cluster may answer)", false
	}
	return "", false
}
