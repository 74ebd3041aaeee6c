package mayfly

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status in internal/httpapi.
const (
	EINVALID      = "invalid"      // bad input; nothing changed
	EUNAUTHORIZED = "unauthorized" // no or unknown credential
	EFORBIDDEN    = "forbidden"    // authenticated, not allowed
	ENOTFOUND     = "not_found"
	ECONFLICT     = "conflict" // the state does not allow it (already done, already decided)
	EUNAVAILABLE  = "unavailable"
	EINTERNAL     = "internal"
)

// Error is an error meant for the user: a code and a message safe to show.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the user-facing message of err: the *Error's message,
// or "internal error" for anything else, so driver errors never leak.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorMessageOrText returns the message of an *Error in err's chain, or
// err's own text: for local errors at the edge of the command line.
func ErrorMessageOrText(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}
