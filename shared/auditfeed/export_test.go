package auditfeed

// SetFormat makes f render entries with format: a test's stand-in for a
// renderer that panics. FormatEntry is the renderer f uses otherwise.
func SetFormat(f *Feeder, format func(Entry, Header) ([][]byte, error)) { f.format = format }

var FormatEntry = formatEntry
