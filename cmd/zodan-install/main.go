// Command zodan-install installs zodan's procedures on Spock nodes; see
// "zodan-install --help".
package main

import (
	"os"

	"github.com/zodan-project/zodan/internal/installcli"
)

func main() { os.Exit(installcli.Main(os.Args, os.Stdout, os.Stderr)) }
