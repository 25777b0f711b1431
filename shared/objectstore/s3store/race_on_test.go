//go:build race

package s3store_test

// raceDetector is true under -race, whose shadow memory makes peak RSS
// figures meaningless.
const raceDetector = true
