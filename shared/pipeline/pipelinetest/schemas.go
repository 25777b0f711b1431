package pipelinetest

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/schemas"
)

// Schemas compiles every detail-type's schema as published: open to
// properties it does not list, as a consumer validates with it.
func Schemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	return schemasWith(t, nil)
}

// StrictSchemas compiles every detail-type's schema closed: each
// object schema rejects the properties it does not list. The tests hold
// the pipeline's events to these (its unit tests, and local mode's and the
// functions' real events in test/pipeline), so a field the code emits but the schema
// does not declare fails a test; they are derived from the published
// files, not kept as a second copy.
func StrictSchemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	return schemasWith(t, func(m map[string]any) {
		if _, ok := m["properties"]; !ok {
			return
		}
		if _, set := m["additionalProperties"]; !set {
			m["additionalProperties"] = false
		}
	})
}

// schemasWith compiles the schemas, each subschema passed to edit
// first unless it is nil.
func schemasWith(t testing.TB, edit func(map[string]any)) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft2020
	c.AssertFormat = true
	out := map[string]*jsonschema.Schema{}
	for dt, file := range schemas.File {
		b, err := schemas.FS.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			var doc any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			EachSubschema(doc, edit)
			if b, err = json.Marshal(doc); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.AddResource(file, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		s, err := c.Compile(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out[dt] = s
	}
	return out
}

// EachSubschema calls f with schema and every schema within it, through
// draft 2020-12's applicators. (A schema that spread an object's
// properties over allOf branches would need unevaluatedProperties to be
// closed; ours list each object's properties in one place.)
func EachSubschema(schema any, f func(map[string]any)) {
	m, ok := schema.(map[string]any)
	if !ok {
		return
	}
	f(m)
	for _, kw := range []string{"properties", "patternProperties", "$defs", "dependentSchemas"} {
		if sub, ok := m[kw].(map[string]any); ok {
			for _, v := range sub {
				EachSubschema(v, f)
			}
		}
	}
	for _, kw := range []string{"items", "contains", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "propertyNames", "not", "if", "then", "else"} {
		EachSubschema(m[kw], f)
	}
	for _, kw := range []string{"prefixItems", "allOf", "anyOf", "oneOf"} {
		if l, ok := m[kw].([]any); ok {
			for _, v := range l {
				EachSubschema(v, f)
			}
		}
	}
}
