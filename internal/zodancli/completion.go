package zodancli

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The scripts ask zodan itself for candidates: urfave/cli answers a
// command line ending in --generate-bash-completion with the commands or
// flags that may follow.
const bashCompletion = `# bash completion for zodan; load with: source <(zodan completion bash)
_zodan_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local -a line=("${COMP_WORDS[@]:0:COMP_CWORD}")
    if [[ "$cur" == -* ]]; then
        line+=("$cur")
    elif (( COMP_CWORD > 1 )) && [[ "$prev" != -* ]]; then
        line+=("-") # after the command: offer its flags
    fi
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$("${line[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F _zodan_complete zodan
`

const zshCompletion = `#compdef zodan
# zsh completion for zodan; load with: source <(zodan completion zsh)
# (after compinit), or save as _zodan in a directory of your $fpath.
_zodan() {
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}
    local -a line=("${(@)words[1,CURRENT-1]}") candidates
    if [[ "$cur" == -* ]]; then
        line+=("$cur")
    elif (( CURRENT > 2 )) && [[ "$prev" != -* ]]; then
        line+=("-") # after the command: offer its flags
    fi
    candidates=("${(@f)$("${line[@]}" --generate-bash-completion 2>/dev/null)}")
    if [[ -n "${candidates[1]}" ]]; then
        compadd -- "${candidates[@]}"
    else
        _files
    fi
}
if [[ "$funcstack[1]" == "_zodan" ]]; then
    _zodan "$@"
else
    compdef _zodan zodan
fi
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash or zsh",
		ArgsUsage: "bash|zsh",
		Description: `Examples:
   source <(zodan completion bash)          # in ~/.bashrc
   zodan completion zsh > "${fpath[1]}/_zodan"`,
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			scripts := map[string]string{"bash": bashCompletion, "zsh": zshCompletion}
			if c.NArg() != 1 {
				return usageError("completion takes one argument, the shell: bash or zsh")
			}
			script, ok := scripts[c.Args().First()]
			if !ok {
				return usageError("no completion for %q: zodan completes in bash and zsh", c.Args().First())
			}
			_, err := fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}
