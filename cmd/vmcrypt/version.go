package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// version is stamped by the Makefile (-X main.version=...); `vmcrypt
// version` and `vmcrypt --version` print it.
var version = "dev"

func init() {
	register(&cli.Command{
		Name:  "version",
		Usage: "print vmcrypt's version",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintln(c.App.Writer, "vmcrypt", version)
			return err
		},
	})
}
