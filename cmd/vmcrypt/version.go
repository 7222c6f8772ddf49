package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

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
