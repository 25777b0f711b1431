package dataset

// Test helpers shared with the external tests (package dataset_test),
// which may import part10 (itself built on this package).
var (
	ReadChunks = readChunks
	ChunkSizes = chunkSizes
)
