// Command mayfly is the Mayfly just-in-time access broker: the server
// (`mayfly server`, `mayfly dev`) and the command-line client of its API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mayflyhq/mayfly"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	var ce *childExit
	if errors.As(err, &ce) {
		os.Exit(ce.code) // mayfly connect: the command's own status
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mayfly: %s\n", oneLine(mayfly.ErrorMessageOrText(err)))
		os.Exit(exitCode(err))
	}
}

// exitCode maps an error to the process exit status: 2 for usage and
// invalid input, 3 for refusals (forbidden, unauthorized), 4 for not found
// or conflicts, 5 for unavailable, 6 when done or revoke could not yet
// verify the account gone, 1 otherwise.
func exitCode(err error) int {
	var ng *notGone
	if errors.As(err, &ng) {
		return exitNotGone
	}
	switch mayfly.ErrorCode(err) {
	case mayfly.EINVALID:
		return 2
	case mayfly.EFORBIDDEN, mayfly.EUNAUTHORIZED:
		return 3
	case mayfly.ENOTFOUND, mayfly.ECONFLICT:
		return 4
	case mayfly.EUNAVAILABLE:
		return 5
	}
	return 1
}

// run is the whole program, callable from tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{ctx: ctx, getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		e.usage()
		return usageErr("no command given")
	}
	switch args[0] {
	case "-h", "--help":
		e.usage()
		return nil
	case "--version", "-version":
		fmt.Fprintln(stdout, buildInfo())
		return nil
	}
	if err := runPath(e, args); err != nil && err != errHelp {
		return err
	}
	return nil
}

// parseOnly parses a command line as run would, without running anything:
// nil when the arguments parse (or ask for help), the usage error
// otherwise. The documentation test checks every example with it.
func parseOnly(args []string) error {
	e := &env{dryRun: true, ctx: context.Background(), getenv: func(string) string { return "" },
		stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	if len(args) == 0 {
		return usageErr("no command given")
	}
	switch args[0] {
	case "-h", "--help", "--version", "-version":
		return nil // run answers these before any command
	}
	err := runPath(e, args)
	if err == errDryRun || err == errHelp {
		return nil
	}
	return err
}
