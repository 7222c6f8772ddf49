package xts

func benchKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i*29 + 3)
	}
	return k
}
