package portal

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"strings"
	"sync"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/thumbnail"
)

// noPreviewPNG is the image a series' thumbnail answers when the renderer
// finds it has none (thumbnail.ErrNoPreview): "no preview" drawn in the
// colours of the study page's "no preview" box (portal.css .nopreview),
// at the thumbnails' size. The page links the preview of every series
// whose transfer syntax is rendered, and only the render finds that
// PALETTE COLOR, native YBR or 1-bit pixel data has none: the <img> shows
// this, not a broken image, with no script (the portal's CSP has none).
// It is answered with a 404 and X-Preview: none, so that a client tells
// it from a preview.
var noPreviewPNG = sync.OnceValue(func() []byte {
	const edge, scale = thumbnail.DefaultEdge, 2
	box, ink := color.RGBA{0xee, 0xf1, 0xf6, 0xff}, color.RGBA{0x5b, 0x64, 0x75, 0xff}
	pal := image.NewPaletted(image.Rect(0, 0, edge, edge), color.Palette{box, ink})
	const text = "no preview"
	w, h := len(text)*(glyphWidth+1)*scale-scale, len(glyphs['n'])*scale
	x0, y0 := (edge-w)/2, (edge-h)/2
	for i, r := range text {
		for y, row := range glyphs[r] {
			for x, c := range row {
				if c != '#' {
					continue
				}
				for dy := range scale {
					for dx := range scale {
						pal.SetColorIndex(x0+(i*(glyphWidth+1)+x)*scale+dx, y0+y*scale+dy, 1)
					}
				}
			}
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, pal); err != nil {
		panic("portal: the no-preview image: " + err.Error()) // an in-memory image always encodes
	}
	return b.Bytes()
})

// glyphWidth is the width of glyphs' letters, each 9 rows (2 of
// descender).
const glyphWidth = 5

// glyphs are the letters of "no preview".
var glyphs = func() map[rune][]string {
	m := map[rune]string{
		' ': ".....|.....|.....|.....|.....|.....|.....|.....|.....",
		'n': ".....|.....|#.##.|##..#|#...#|#...#|#...#|.....|.....",
		'o': ".....|.....|.###.|#...#|#...#|#...#|.###.|.....|.....",
		'p': ".....|.....|####.|#...#|#...#|#...#|####.|#....|#....",
		'r': ".....|.....|#.##.|##..#|#....|#....|#....|.....|.....",
		'e': ".....|.....|.###.|#...#|#####|#....|.###.|.....|.....",
		'v': ".....|.....|#...#|#...#|#...#|.#.#.|..#..|.....|.....",
		'i': "..#..|.....|.##..|..#..|..#..|..#..|.###.|.....|.....",
		'w': ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.|.....|.....",
	}
	out := map[rune][]string{}
	for r, g := range m {
		out[r] = strings.Split(g, "|")
	}
	return out
}()
