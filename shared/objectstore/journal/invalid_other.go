//go:build !linux

package journal

func isInvalid(error) bool { return false }
