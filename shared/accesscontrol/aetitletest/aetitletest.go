// Package aetitletest is the one table of AE titles that every caller of the AE title rule
// (accesscontrol.CheckAETitle) is tested on: the allowlist, the commitment peers, scp-task's --ae-title, the
// stack's configuration and the titles an association receives. Each caller's test runs the table through its
// own entry point, so none can keep a rule of its own.
package aetitletest

// Title is an AE title and whether it is one.
type Title struct {
	Name  string
	AE    string
	Valid bool
	// Problem is a part of the rule's error for a title that is not one.
	Problem string
}

// Titles is the table: PS3.5's AE VR, at most 16 bytes of the default character repertoire without control
// characters or backslash, leading and trailing spaces not significant. None holds a character an entry's
// syntax reserves (, @ | # =), so that each caller can put any of them where an AE title goes.
var Titles = []Title{
	{Name: "plain", AE: "CT_SITE_A", Valid: true},
	{Name: "sixteen characters", AE: "ABCDEFGHIJKLMNOP", Valid: true},
	{Name: "inner space", AE: "CT A", Valid: true},
	{Name: "padded", AE: " CT ", Valid: true},
	{Name: "punctuation", AE: "CT?-.*$", Valid: true},
	{Name: "seventeen characters", AE: "ABCDEFGHIJKLMNOPQ", Problem: "AE title is 17 characters, AE titles have at most 16"},
	{Name: "empty", AE: "", Problem: "empty AE title"},
	{Name: "spaces alone", AE: "   ", Problem: "empty AE title"},
	{Name: "backslash", AE: `A\B`, Problem: `AE title has "\\" at position 2`},
	{Name: "control character", AE: "CT\x01", Problem: `AE title has "\x01" at position 3`},
	{Name: "tab", AE: "IN\tGEST", Problem: `AE title has "\t" at position 3`},
	{Name: "delete", AE: "CT\x7f", Problem: `AE title has "\x7f" at position 3`},
	{Name: "past ASCII", AE: "\u00c9CHO", Problem: `AE title has "\xc3" at position 1`},
}
