package keysafe

import "crypto/hmac"

func hmacSum(name string, key, msg []byte) []byte {
	h, n, _ := macSpec(name)
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)[:n]
}
