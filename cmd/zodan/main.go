// Command zodan adds nodes to and removes nodes from a pgEdge Spock
// cluster; see "zodan --help".
package main

import (
	"os"

	"github.com/zodan-project/zodan/internal/zodancli"
)

func main() { os.Exit(zodancli.Main(os.Args, os.Stdout, os.Stderr)) }
