//go:build !race

package s3store_test

const raceDetector = false
