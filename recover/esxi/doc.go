// Package esxi reads the host side of VMware ESXi encryption.
package esxi
