package kmip

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	dir := filepath.FromSlash("/runbook")
	fc, err := ParseConfig([]byte(`{
	  "provider": "KMS-Cluster",
	  "servers": [
	    {"name": "kms-a", "address": "kms-a.example.com", "port": 5697},
	    {"address": "10.0.0.2"},
	    {"address": "fd00::1", "port": 15696},
	    "kms-c.example.com:5698",
	    "kms-d"
	  ],
	  "cert": "client.pem",
	  "key": "keys/client-key.pem",
	  "ca": "/etc/kms/ca.pem",
	  "timeout": "2.5s"
	}`), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &FileConfig{
		Provider: "KMS-Cluster",
		Servers: []Server{{"kms-a", "kms-a.example.com:5697"}, {"", "10.0.0.2:5696"}, {"", "[fd00::1]:15696"},
			{"", "kms-c.example.com:5698"}, {"", "kms-d:5696"}},
		CertFile: filepath.Join(dir, "client.pem"),
		KeyFile:  filepath.Join(dir, "keys", "client-key.pem"),
		CAFile:   "/etc/kms/ca.pem",
		Timeout:  2500 * time.Millisecond,
	}
	if filepath.Separator != '/' {
		want.CAFile = filepath.Join(dir, "/etc/kms/ca.pem")
	}
	if !reflect.DeepEqual(fc, want) {
		t.Fatalf("got  %+v\nwant %+v", fc, want)
	}
	fc, err = ParseConfig([]byte(`{"servers": ["kms:5696"], "cert": "c", "key": "k", "ca": "a", "timeout": 30}`), "d")
	if err != nil || fc.Timeout != 30*time.Second || fc.Provider != "" {
		t.Fatalf("timeout in seconds, no provider: %+v, %v", fc, err)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	base := `"cert": "c", "key": "k", "ca": "a"`
	cases := map[string]struct{ text, field string }{
		"not JSON":            {`servers: kms`, ""},
		"a list":              {`[{"servers": ["kms"]}]`, ""},
		"two objects":         {`{"servers": ["kms"], ` + base + `} {}`, ""},
		"unknown field":       {`{"servers": ["kms"], "password": "x", ` + base + `}`, ""},
		"no servers":          {`{"servers": [], ` + base + `}`, "servers"},
		"servers missing":     {`{` + base + `}`, "servers"},
		"bad port string":     {`{"servers": ["kms:99999"], ` + base + `}`, "servers[0]"},
		"bad port object":     {`{"servers": [{"address": "kms", "port": 0}], ` + base + `}`, "servers[0].port"},
		"port in address":     {`{"servers": [{"address": "kms:5696"}], ` + base + `}`, "servers[0].address"},
		"no address":          {`{"servers": [{"name": "kms"}], ` + base + `}`, "servers[0].address"},
		"unknown server key":  {`{"servers": [{"address": "kms", "proxy": "p"}], ` + base + `}`, "servers[0]"},
		"server a number":     {`{"servers": [5696], ` + base + `}`, "servers[0]"},
		"listed twice":        {`{"servers": ["kms", "kms:5696"], ` + base + `}`, "servers[1]"},
		"empty provider":      {`{"provider": "", "servers": ["kms"], ` + base + `}`, "provider"},
		"provider with slash": {`{"provider": "a/b", "servers": ["kms"], ` + base + `}`, "provider"},
		"no cert":             {`{"servers": ["kms"], "key": "k", "ca": "a"}`, "cert"},
		"empty key":           {`{"servers": ["kms"], "cert": "c", "key": "", "ca": "a"}`, "key"},
		"no ca":               {`{"servers": ["kms"], "cert": "c", "key": "k"}`, "ca"},
		"timeout zero":        {`{"servers": ["kms"], ` + base + `, "timeout": 0}`, "timeout"},
		"timeout negative":    {`{"servers": ["kms"], ` + base + `, "timeout": "-1s"}`, "timeout"},
		"timeout a day":       {`{"servers": ["kms"], ` + base + `, "timeout": "24h"}`, "timeout"},
		"timeout words":       {`{"servers": ["kms"], ` + base + `, "timeout": "ten seconds"}`, "timeout"},
		"timeout a list":      {`{"servers": ["kms"], ` + base + `, "timeout": [1]}`, "timeout"},
		"not UTF-8":           {"{\"provider\": \"\xff\"}", ""},
	}
	for name, c := range cases {
		_, err := ParseConfig([]byte(c.text), "d")
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("%s: err = %v, want a ConfigError on field %q", name, err, c.field)
		}
	}
	var many []string
	for i := 0; i <= MaxServers; i++ {
		many = append(many, `"kms`+strings.Repeat("x", i)+`"`)
	}
	if _, err := ParseConfig([]byte(`{"servers": [`+strings.Join(many, ",")+`], `+base+`}`), "d"); err == nil {
		t.Error("more than MaxServers servers accepted")
	}
}

// TestConfigFileGet: a configuration file with relative paths, loaded and
// used to Get a key from a (fake) server.
func TestConfigFileGet(t *testing.T) {
	pki := testPKI(t)
	f := startFake(t, kms(map[string]fakeKey{"1": {aes256("1", keyN(1)), StateActive}}))
	dir := t.TempDir()
	for src, dst := range map[string]string{pki.Client.CertFile: "client.pem", pki.Client.KeyFile: "client-key.pem", pki.CA.CertFile: "ca.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "kmip.json")
	text := `{"provider": "KMS", "servers": ["` + closedPort(t) + `", "` + f.addr + `"], "cert": "client.pem", "key": "client-key.pem", "ca": "ca.pem", "timeout": "3s"}`
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := LoadConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fc.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Timeout != 3*time.Second || len(cfg.Servers) != 2 {
		t.Fatalf("config %+v", cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if k, err := c.Get(context.Background(), "1"); err != nil || k.Server != f.addr {
		t.Fatalf("Get: %v", err)
	}
	if _, err := LoadConfigFile(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestLoadKeyPairRefuses(t *testing.T) {
	pki := testPKI(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER, _ := pem.Decode(mustRead(t, pki.Client.KeyFile))
	enc := write("enc.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: keyDER.Bytes}))
	legacy := write("legacy.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: keyDER.Bytes}))
	notPEM := write("junk.pem", []byte("not a certificate"))
	big := write("big.pem", make([]byte, MaxPEMSize+1))
	cases := map[string][2]string{
		"key of another certificate": {pki.Client.CertFile, pki.Other.KeyFile},
		"encrypted PKCS#8 key":       {pki.Client.CertFile, enc},
		"encrypted legacy key":       {pki.Client.CertFile, legacy},
		"certificate not PEM":        {notPEM, pki.Client.KeyFile},
		"key not PEM":                {pki.Client.CertFile, notPEM},
		"key file too large":         {pki.Client.CertFile, big},
		"missing key":                {pki.Client.CertFile, filepath.Join(dir, "none")},
	}
	for name, c := range cases {
		_, err := LoadKeyPair(c[0], c[1])
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want a ConfigError", name, err)
		}
	}
	if cert, err := LoadKeyPair(pki.Client.CertFile, pki.Client.KeyFile); err != nil || cert.Leaf.Subject.CommonName != "vcenter" {
		t.Fatalf("good pair: %v", err)
	}
	for _, f := range []string{notPEM, pki.Client.KeyFile, big} {
		if _, err := LoadCAs(f); err == nil {
			t.Errorf("LoadCAs(%s) accepted", f)
		}
	}
	pool, err := LoadCAs(pki.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Server.Cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("the loaded CA does not verify the server: %v", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClientCertProblems(t *testing.T) {
	pki := testPKI(t)
	now := time.Now()
	if p := ClientCertProblems(pki.Client.Cert, now); len(p) != 0 {
		t.Errorf("good client certificate: %v", p)
	}
	for _, c := range []*x509.Certificate{pki.NoEKU.Cert, pki.ServerEKU.Cert} {
		if p := ClientCertProblems(c, now); len(p) != 1 {
			t.Errorf("%s: %v", c.Subject.CommonName, p)
		}
	}
	if p := ClientCertProblems(pki.Client.Cert, now.Add(48*time.Hour)); len(p) != 1 {
		t.Errorf("expired: %v", p)
	}
}
