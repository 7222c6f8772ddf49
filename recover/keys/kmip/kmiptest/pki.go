// Package kmiptest runs a real KMIP server for tests: Debian's PyKMIP
// (package python3-pykmip, its pykmip-server run by /usr/bin/python3) on
// 127.0.0.1 with a free port and throwaway ECDSA P-256 certificates, and
// drives it with PyKMIP's own client to seed keys the way vCenter does
// (Create AES-256, Activate) and to revoke or destroy them.
//
// Start gives a test its own server (stopped by t.Cleanup); Shared gives
// every test of a binary the same one, stopped by Main (call it from
// TestMain). A missing python3-pykmip fails the test: it never skips.
//
// The certificates (NewPKI): a CA; a server certificate for IP 127.0.0.1
// only (so "localhost" is a host-name mismatch); the client certificate
// "vcenter" that seeds keys and owns them; a second client "other" that
// may Get only keys created under the shared policy (SharedPolicy); client
// certificates without extended key usage and with serverAuth only; and a
// second, unrelated CA with a client certificate of its own.
package kmiptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Cert is a certificate and its key, in PEM files.
type Cert struct {
	Name     string // subject CN
	CertFile string
	KeyFile  string
	Cert     *x509.Certificate
	Key      *ecdsa.PrivateKey
}

// TLS returns the certificate for a tls.Config.
func (c *Cert) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// PKI is a set of throwaway certificates in Dir.
type PKI struct {
	Dir    string
	CA     *Cert // the CA the server and the good clients share
	Server *Cert // CN kmip-server, IP SAN 127.0.0.1, serverAuth

	Client      *Cert // CN vcenter, clientAuth: seeds and owns the keys
	Other       *Cert // CN other, clientAuth: Gets shared-policy keys only
	NoEKU       *Cert // CN no-eku: no extended key usage
	ServerEKU   *Cert // CN server-eku: extended key usage serverAuth only
	WrongCA     *Cert // another CA, unrelated to the server
	WrongClient *Cert // CN wrong-ca-client, clientAuth, signed by WrongCA
}

// Names of the client certificates' CNs.
const (
	ClientCN = "vcenter"
	OtherCN  = "other"
)

// NewPKI writes a fresh PKI into dir (created if needed).
func NewPKI(t testing.TB, dir string) *PKI {
	t.Helper()
	p, err := newPKI(dir)
	if err != nil {
		t.Fatalf("kmiptest: certificates: %v", err)
	}
	return p
}

func newPKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir}
	var err error
	mk := func(name string, tmpl *x509.Certificate, parent *Cert) *Cert {
		if err != nil {
			return nil
		}
		var c *Cert
		c, err = makeCert(dir, name, tmpl, parent)
		return c
	}
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	}
	leaf := func(cn string, eku ...x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: eku,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement}
	}
	p.CA = mk("ca", ca("vmcrypt test KMIP CA"), nil)
	srv := leaf("kmip-server", x509.ExtKeyUsageServerAuth)
	srv.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	p.Server = mk("server", srv, p.CA)
	p.Client = mk("client", leaf(ClientCN, x509.ExtKeyUsageClientAuth), p.CA)
	p.Other = mk("other", leaf(OtherCN, x509.ExtKeyUsageClientAuth), p.CA)
	p.NoEKU = mk("no-eku", leaf("no-eku"), p.CA)
	p.ServerEKU = mk("server-eku", leaf("server-eku", x509.ExtKeyUsageServerAuth), p.CA)
	p.WrongCA = mk("wrong-ca", ca("vmcrypt test unrelated CA"), nil)
	p.WrongClient = mk("wrong-ca-client", leaf("wrong-ca-client", x509.ExtKeyUsageClientAuth), p.WrongCA)
	return p, err
}

var serial atomic.Int64

func makeCert(dir, name string, tmpl *x509.Certificate, parent *Cert) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano() + serial.Add(1))
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &Cert{Name: tmpl.Subject.CommonName, Cert: cert, Key: key,
		CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem")}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// Pool returns a pool holding the CA.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	return pool
}

// WrongPool returns a pool holding only the unrelated CA.
func (p *PKI) WrongPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.WrongCA.Cert)
	return pool
}
