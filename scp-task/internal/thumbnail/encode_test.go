package thumbnail

import (
	"errors"
	"image"
	"testing"
)

// TestEncodeNoPixels: an image of no pixels is no preview. FuzzRender found
// a JPEG Baseline object whose frame decoded to 0 × 0, which the PNG
// encoder refused ("invalid image size"), an error that was no preview.
func TestEncodeNoPixels(t *testing.T) {
	for _, r := range []image.Rectangle{image.Rect(0, 0, 0, 0), image.Rect(0, 0, 5, 0), image.Rect(0, 0, 0, 5)} {
		if _, err := encode(image.NewGray(r)); !errors.Is(err, ErrNoPreview) {
			t.Errorf("%v: %v, want no preview", r, err)
		}
	}
	if png, err := encode(image.NewGray(image.Rect(0, 0, 1, 1))); err != nil || len(png) == 0 {
		t.Errorf("1 × 1: %d bytes, %v", len(png), err)
	}
}
