package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
)

// Bounds on auto_approve_if conditions.
const (
	// celCostLimit bounds the work of one evaluation; a condition that
	// exceeds it is not met.
	celCostLimit = 100_000
	// celRecursionLimit bounds the nesting depth of a condition.
	celRecursionLimit = 64
	// celNodeLimit bounds the number of nodes of a condition.
	celNodeLimit = 2_000
)

// The fields of the variables a condition sees.
var celFields = map[string][]string{
	"request": {"user", "groups", "target", "grant", "reason", "duration", "break_glass", "extension", "total_so_far"},
	"target":  {"name", "kind", "labels"},
	"user":    {"name", "groups"},
}

// celEnv is the environment every condition is checked against. It is
// built once, on first use, and never changes afterwards.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	dynMap := cel.MapType(cel.StringType, cel.DynType)
	return cel.NewEnv(
		cel.Variable("request", dynMap),
		cel.Variable("target", dynMap),
		cel.Variable("user", dynMap),
		cel.Variable("now", cel.TimestampType),
		cel.ParserExpressionSizeLimit(MaxExprLen),
		cel.ParserRecursionLimit(celRecursionLimit),
		cel.ExpressionNodeLimit(celNodeLimit),
	)
})

// compileCondition parses and type-checks a condition and returns a
// program that evaluates it with a bounded cost.
func compileCondition(expr string) (cel.Program, error) {
	if len(expr) > MaxExprLen {
		return nil, fmt.Errorf("condition is longer than %d bytes", MaxExprLen)
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		var msgs []string
		for _, e := range iss.Errors() {
			msg := oneLine(e.Message)
			if e.Location != nil && e.Location.Line() > 0 {
				msg = fmt.Sprintf("%d:%d: %s", e.Location.Line(), e.Location.Column()+1, msg)
			}
			msgs = append(msgs, msg)
			if len(msgs) == 3 {
				break
			}
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	if out := ast.OutputType(); !out.IsExactType(types.BoolType) && !out.IsExactType(types.DynType) {
		return nil, fmt.Errorf("condition is of type %s, want bool", out)
	}
	if err := checkFields(ast); err != nil {
		return nil, err
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit))
	if err != nil {
		return nil, fmt.Errorf("condition: %w", err)
	}
	return prg, nil
}

// checkFields rejects selections of fields the variables do not have, such
// as request.durration, which would otherwise only fail at evaluation.
func checkFields(ast *cel.Ast) error {
	var bad error
	celast.PostOrderVisit(ast.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if bad != nil || e.Kind() != celast.SelectKind {
			return
		}
		sel := e.AsSelect()
		op := sel.Operand()
		if op.Kind() != celast.IdentKind {
			return
		}
		fields, ok := celFields[op.AsIdent()]
		if !ok {
			return
		}
		if !slices.Contains(fields, sel.FieldName()) {
			bad = fmt.Errorf("%s has no field %q (fields: %s)", op.AsIdent(), sel.FieldName(), strings.Join(fields, ", "))
		}
	}))
	return bad
}

// oneLine folds a multi-line CEL error report into one line.
func oneLine(s string) string {
	s = strings.TrimPrefix(s, "ERROR: ")
	fields := strings.Fields(s)
	return strings.Join(fields, " ")
}

// celInput is the activation of a condition, built once per decision and
// only when a condition is evaluated. Conditions of one decision run one
// after another, so the request's duration is set in place before each.
type celInput struct {
	request map[string]any
	vars    map[string]any
}

func newCELInput(in *Input, t *TargetInfo) *celInput {
	groups := in.Groups
	if groups == nil {
		groups = []string{}
	}
	req := map[string]any{
		"user":         in.User,
		"groups":       groups,
		"target":       in.Target,
		"grant":        in.Grant,
		"reason":       in.Reason,
		"duration":     types.Duration{Duration: in.Duration},
		"break_glass":  in.BreakGlass,
		"extension":    in.Extension,
		"total_so_far": types.Duration{Duration: in.TotalSoFar},
	}
	tgt := map[string]any{"name": in.Target, "kind": "", "labels": map[string]string{}}
	if t != nil && t.Name == in.Target {
		labels := t.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		tgt = map[string]any{"name": t.Name, "kind": t.Kind, "labels": labels}
	}
	return &celInput{
		request: req,
		vars: map[string]any{
			"request": req,
			"target":  tgt,
			"user":    map[string]any{"name": in.User, "groups": groups},
			"now":     types.Timestamp{Time: in.Now},
		},
	}
}

// evalCondition evaluates prg for a request of duration d and reports
// whether it holds; a runtime error or a non-bool result means the
// condition is not met, and the returned text says why.
func evalCondition(prg cel.Program, ci *celInput, d time.Duration) (ok bool, why string) {
	defer func() {
		// A condition must never take the decision down with it.
		if r := recover(); r != nil {
			ok, why = false, fmt.Sprintf("auto_approve_if failed: %v", r)
		}
	}()
	ci.request["duration"] = types.Duration{Duration: d}
	out, _, err := prg.Eval(ci.vars)
	if err != nil {
		return false, fmt.Sprintf("auto_approve_if failed: %s", oneLine(err.Error()))
	}
	b, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Sprintf("auto_approve_if returned %s, not a bool", out.Type().TypeName())
	}
	if !b {
		return false, "auto_approve_if is false"
	}
	return true, "auto_approve_if is true"
}
