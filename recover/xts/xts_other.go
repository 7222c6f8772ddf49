//go:build !amd64 || purego

package xts

func bestImpl() impl { return implGeneric }

// availableImpls lists the implementations this CPU can run.
func availableImpls() []impl { return []impl{implGeneric} }

func (c *Cipher) cryptKernel(im impl, dst, src []byte, lba uint64, encrypt bool) {
	c.cryptGeneric(dst, src, lba, encrypt)
}
