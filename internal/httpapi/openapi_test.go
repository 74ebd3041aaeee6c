package httpapi

import (
	"context"
	"testing"
)

// TestOpenAPIIsValid: the description builds and kin-openapi accepts it
// as an OpenAPI 3.1 document.
func TestOpenAPIIsValid(t *testing.T) {
	doc, err := OpenAPI("test")
	if err != nil {
		t.Fatal(err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %q; want 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the description is not valid: %v", err)
	}
}
