package kmip

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of a configuration file and of the PEM files it names.
const (
	MaxConfigSize  = 64 << 10 // a configuration file
	MaxPEMSize     = 1 << 20  // a certificate, key or CA file
	MaxServers     = 64       // members of one cluster
	MaxTimeout     = 10 * time.Minute
	maxNameLen     = 256
	maxPathLen     = 4096
	maxServerEntry = 512
)

// FileConfig is a KMIP configuration file, parsed: one key provider (a KMS
// cluster) as vCenter lists it, its members in order, the client's
// certificate and key, the CA that signs the servers' certificates, and a
// timeout. The file holds paths, never secrets:
//
//	{
//	  "provider": "KMS-Cluster",
//	  "servers": [
//	    {"name": "kms-a", "address": "kms-a.example.com", "port": 5696},
//	    "kms-b.example.com:5696"
//	  ],
//	  "cert": "vmcrypt-client.pem",
//	  "key": "vmcrypt-client-key.pem",
//	  "ca": "kms-ca.pem",
//	  "timeout": "10s"
//	}
//
// "provider" is the key provider name the VMs' key ids carry (vSphere's
// cluster id); optional (empty: any provider). "servers" lists the
// members, tried in order: an object with "address" and optional "name"
// and "port" (vSphere's KmipServerInfo fields; port 5696 by default), or a
// "host:port" string. "cert", "key" and "ca" are PEM files, relative to
// the configuration file's folder unless absolute. "timeout" is per
// request to one server: a duration ("10s", "1m") or a number of seconds;
// optional. Unknown fields are refused.
type FileConfig struct {
	Path     string        // the file read, as given
	Provider string        // "" when not set
	Servers  []Server      // in order
	CertFile string        // resolved paths
	KeyFile  string        //
	CAFile   string        //
	Timeout  time.Duration // 0 when not set
}

// Server is one member of a cluster.
type Server struct {
	Name string // optional label
	Addr string // "host:port", normalised
}

// ConfigError is a fault in a configuration file (or in a PEM file it
// names): the file, the field, what is wrong. A caller may report it as a
// usage error.
type ConfigError struct {
	File  string
	Field string // JSON field ("servers[1].port"), or "" for the whole file
	Msg   string
	Err   error // underlying error, if any
}

func (e *ConfigError) Error() string {
	s := "KMIP configuration " + e.File
	if e.Field != "" {
		s += ": field " + e.Field
	}
	return s + ": " + e.Msg
}

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// LoadConfigFile reads and checks a configuration file. Relative paths in
// it are resolved against its folder.
func LoadConfigFile(path string) (*FileConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ConfigError{File: path, Msg: "cannot be read", Err: err}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, &ConfigError{File: path, Msg: "cannot be read", Err: err}
	}
	if len(data) > MaxConfigSize {
		return nil, &ConfigError{File: path, Msg: fmt.Sprintf("is larger than %d bytes", MaxConfigSize)}
	}
	fc, err := ParseConfig(data, filepath.Dir(path))
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = path
		}
		return nil, err
	}
	fc.Path = path
	return fc, nil
}

type rawConfig struct {
	Provider *string           `json:"provider"`
	Servers  []json.RawMessage `json:"servers"`
	Cert     *string           `json:"cert"`
	Key      *string           `json:"key"`
	CA       *string           `json:"ca"`
	Timeout  json.RawMessage   `json:"timeout"`
}

type rawServer struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    *int   `json:"port"`
}

// ParseConfig parses configuration text; dir resolves relative paths.
// Errors are *ConfigError (File empty).
func ParseConfig(data []byte, dir string) (*FileConfig, error) {
	fail := func(field, format string, a ...any) (*FileConfig, error) {
		return nil, &ConfigError{Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	if !utf8.Valid(data) {
		return fail("", "is not UTF-8 text")
	}
	var raw rawConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, &ConfigError{Msg: "is not a valid configuration object (" + err.Error() + ")", Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail("", "has data after the configuration object")
	}
	fc := &FileConfig{}
	if raw.Provider != nil {
		p := *raw.Provider
		if p == "" || len(p) > maxNameLen || strings.ContainsAny(p, "/\x00") || strings.TrimSpace(p) != p {
			return fail("provider", "%q is not a key provider name (non-empty, no '/', no surrounding spaces, at most %d bytes)", p, maxNameLen)
		}
		fc.Provider = p
	}
	if len(raw.Servers) == 0 {
		return fail("servers", "must list at least one server")
	}
	if len(raw.Servers) > MaxServers {
		return fail("servers", "lists %d servers (the limit is %d)", len(raw.Servers), MaxServers)
	}
	seen := map[string]bool{}
	for i, rs := range raw.Servers {
		field := fmt.Sprintf("servers[%d]", i)
		if len(rs) > maxServerEntry {
			return fail(field, "is longer than %d bytes", maxServerEntry)
		}
		var s Server
		var str string
		if err := json.Unmarshal(rs, &str); err == nil {
			a, err := NormalizeAddr(str)
			if err != nil {
				return fail(field, "%q is not host:port", str)
			}
			s.Addr = a
		} else {
			var o rawServer
			d := json.NewDecoder(bytes.NewReader(rs))
			d.DisallowUnknownFields()
			if err := d.Decode(&o); err != nil {
				return fail(field, "must be \"host:port\" or an object with \"address\", \"name\" and \"port\" (%v)", err)
			}
			if o.Address == "" || strings.ContainsAny(o.Address, "[]") || (strings.Contains(o.Address, ":") && strings.Count(o.Address, ":") < 2) {
				return fail(field+".address", "%q is not a host name or address (the port goes in \"port\")", o.Address)
			}
			port := DefaultPort
			if o.Port != nil {
				port = *o.Port
				if port < 1 || port > 65535 {
					return fail(field+".port", "%d is not a port (1 to 65535)", port)
				}
			}
			host := o.Address
			if strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
			a, err := NormalizeAddr(host + ":" + strconv.Itoa(port))
			if err != nil {
				return fail(field+".address", "%q is not a host name or address", o.Address)
			}
			if len(o.Name) > maxNameLen {
				return fail(field+".name", "is longer than %d bytes", maxNameLen)
			}
			s = Server{Name: o.Name, Addr: a}
		}
		if seen[s.Addr] {
			return fail(field, "%s is listed twice", s.Addr)
		}
		seen[s.Addr] = true
		fc.Servers = append(fc.Servers, s)
	}
	for _, p := range []struct {
		name string
		v    *string
		dst  *string
	}{{"cert", raw.Cert, &fc.CertFile}, {"key", raw.Key, &fc.KeyFile}, {"ca", raw.CA, &fc.CAFile}} {
		if p.v == nil || *p.v == "" {
			return fail(p.name, "is required (a PEM file)")
		}
		if len(*p.v) > maxPathLen || strings.ContainsRune(*p.v, 0) {
			return fail(p.name, "is not a file path")
		}
		path := *p.v
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		*p.dst = path
	}
	if len(raw.Timeout) > 0 && string(raw.Timeout) != "null" {
		d, err := parseTimeout(raw.Timeout)
		if err != nil {
			return fail("timeout", "%v", err)
		}
		fc.Timeout = d
	}
	return fc, nil
}

// parseTimeout reads a duration string or a number of seconds.
func parseTimeout(raw json.RawMessage) (time.Duration, error) {
	var d time.Duration
	var s string
	var secs float64
	switch {
	case json.Unmarshal(raw, &s) == nil:
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration (\"10s\", \"1m\")", s)
		}
	case json.Unmarshal(raw, &secs) == nil:
		if math.IsNaN(secs) || secs <= 0 || secs > MaxTimeout.Seconds() {
			return 0, fmt.Errorf("%v seconds is out of range", secs)
		}
		d = time.Duration(secs * float64(time.Second))
	default:
		return 0, errors.New("must be a duration (\"10s\") or a number of seconds")
	}
	if d <= 0 || d > MaxTimeout {
		return 0, fmt.Errorf("%v is out of range (above 0, at most %v)", d, MaxTimeout)
	}
	return d, nil
}

// Addrs returns the servers' addresses in order.
func (fc *FileConfig) Addrs() []string {
	a := make([]string, len(fc.Servers))
	for i, s := range fc.Servers {
		a[i] = s.Addr
	}
	return a
}

// ClientConfig loads the certificate, key and CA files and returns a
// client configuration.
func (fc *FileConfig) ClientConfig() (Config, error) {
	cert, err := LoadKeyPair(fc.CertFile, fc.KeyFile)
	if err != nil {
		return Config{}, err
	}
	roots, err := LoadCAs(fc.CAFile)
	if err != nil {
		return Config{}, err
	}
	return Config{Servers: fc.Addrs(), Certificate: cert, RootCAs: roots, Timeout: fc.Timeout}, nil
}

// readPEMFile reads a file of at most MaxPEMSize bytes.
func readPEMFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ConfigError{File: path, Msg: what + " cannot be read", Err: err}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPEMSize+1))
	if err != nil {
		return nil, &ConfigError{File: path, Msg: what + " cannot be read", Err: err}
	}
	if len(data) > MaxPEMSize {
		clear(data)
		return nil, &ConfigError{File: path, Msg: fmt.Sprintf("%s is larger than %d bytes", what, MaxPEMSize)}
	}
	return data, nil
}

// LoadKeyPair reads a client certificate (PEM, the client's certificate
// first, then any intermediates) and its private key (PEM: PKCS#8, EC or
// PKCS#1; not encrypted). The key file's bytes are zeroed after use.
// Errors are *ConfigError naming the file; they never hold key bytes.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEMFile(certFile, "the client certificate")
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEMFile(keyFile, "the client key")
	if err != nil {
		return tls.Certificate{}, err
	}
	defer clear(keyPEM)
	if blk, _ := pem.Decode(keyPEM); blk != nil {
		encrypted := strings.Contains(blk.Type, "ENCRYPTED") || blk.Headers["Proc-Type"] != ""
		clear(blk.Bytes)
		if encrypted {
			return tls.Certificate{}, &ConfigError{File: keyFile, Msg: "the client key is encrypted; give it decrypted (its file is the secret to protect)"}
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, &ConfigError{File: certFile + " and " + keyFile,
			Msg: "are not a certificate and its private key in PEM (" + err.Error() + ")", Err: err}
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, &ConfigError{File: certFile, Msg: "the client certificate does not parse", Err: err}
		}
	}
	return cert, nil
}

// LoadCAs reads the CA certificates (PEM) that sign the servers'
// certificates. Errors are *ConfigError naming the file.
func LoadCAs(file string) (*x509.CertPool, error) {
	data, err := readPEMFile(file, "the CA file")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, &ConfigError{File: file, Msg: fmt.Sprintf("certificate %d of the CA file does not parse", n+1), Err: err}
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, &ConfigError{File: file, Msg: "the CA file holds no PEM certificate"}
	}
	return pool, nil
}

// ClientCertProblems says what may make servers refuse the client
// certificate: not valid at now, or an extended key usage without
// clientAuth (none at all is refused by some servers, PyKMIP among them).
// Empty when nothing is found.
func ClientCertProblems(c *x509.Certificate, now time.Time) []string {
	var p []string
	if now.Before(c.NotBefore) {
		p = append(p, "the client certificate is not valid before "+c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		p = append(p, "the client certificate expired on "+c.NotAfter.UTC().Format(time.RFC3339))
	}
	client := false
	for _, u := range c.ExtKeyUsage {
		client = client || u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
	}
	switch {
	case len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0:
		p = append(p, "the client certificate has no extended key usage; some KMS (PyKMIP) require clientAuth")
	case !client:
		p = append(p, "the client certificate's extended key usage does not include clientAuth; TLS servers refuse it")
	}
	return p
}
