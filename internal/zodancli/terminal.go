package zodancli

import (
	"io"
	"os"
)

// isTerminal reports whether w is a terminal (a character device), where
// a live status line and colours make sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// wantColor follows the NO_COLOR convention (https://no-color.org) and
// leaves dumb terminals alone.
func wantColor(w io.Writer) bool {
	return isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}
