//go:build !unix

package script

import "os/exec"

// killGroupOnCancel keeps the default: the command itself is killed when
// the context ends.
func killGroupOnCancel(cmd *exec.Cmd) {}
