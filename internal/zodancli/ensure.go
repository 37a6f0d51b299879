package zodancli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/dsn"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/render"
)

// ensureProcedures makes sure the node behind conn has the procedures
// this zodan calls, installing or upgrading them unless --no-install
// forbids it. say reports what it did.
func ensureProcedures(ctx context.Context, conn *pgx.Conn, op operation, say func(string)) error {
	label, schema := dsn.Label(op.dsn), op.settings.schema
	in, err := install.New(conn, schema, render.Options{})
	if err != nil {
		return err
	}
	st, err := in.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("reading what zodan installed on %s: %w", label, err)
	}
	var present bool
	if err := conn.QueryRow(ctx, "SELECT to_regprocedure($1) IS NOT NULL", op.signature()).Scan(&present); err != nil {
		return fmt.Errorf("looking for %s on %s: %w", op.signature(), label, err)
	}

	newer := errors.Is(st.NotNewer(), install.ErrNewerVersionInstalled)
	switch {
	case newer && present:
		say(fmt.Sprintf("%s has newer procedures (version %d%s) than this zodan %s (version %d); calling them as they are",
			label, st.Version, release(st.Release), zodan.Version, install.Latest()))
		return nil
	case newer:
		return &exitError{code: exitFailed, msg: fmt.Sprintf(
			"%s has newer procedures (version %d%s) than this zodan %s, but no %s; use the zodan that installed them",
			label, st.Version, release(st.Release), zodan.Version, op.signature())}
	case st.Version == 0 && present:
		// Created by hand (or a test stub): installing over it would
		// fail on the existing procedure, and it is what the user has.
		say(fmt.Sprintf("%s on %s was not installed by zodan-install (no version record); calling it as it is", op.signature(), label))
		return nil
	}

	why := staleReason(st, present, op.signature())
	if why == "" {
		return nil
	}
	if op.settings.noInstall {
		return &exitError{code: exitFailed, msg: fmt.Sprintf(`%s: %s, and --no-install forbids installing them.
Install them with:
   zodan-install install --dsn %s%s
or run this command again without --no-install.`,
			label, why, shellQuote(dsn.Mask(op.dsn)), schemaFlagFor(schema))}
	}
	res, err := in.Install(ctx)
	if err != nil {
		return fmt.Errorf("installing zodan %s's procedures on %s (%s): %w", zodan.Version, label, why, err)
	}
	say(fmt.Sprintf("installed zodan %s's procedures on %s in schema %s (version %d -> %d), because %s",
		zodan.Version, label, schema, res.From, res.To, why))
	return nil
}

// staleReason says why the node needs this build's procedures, or ""
// when it has them.
func staleReason(st install.State, present bool, signature string) string {
	switch {
	case st.Version == 0:
		return "the procedures are not installed"
	case st.Version < install.Latest():
		return fmt.Sprintf("the installed procedures (version %d%s) are older than this zodan's (version %d, zodan %s)",
			st.Version, release(st.Release), install.Latest(), zodan.Version)
	case install.VersionLess(st.Release, zodan.Version):
		return fmt.Sprintf("the installed procedures are zodan %s's, older than this zodan %s", st.Release, zodan.Version)
	case !present:
		return fmt.Sprintf("version %d is recorded as installed but %s is missing", st.Version, signature)
	}
	return ""
}

func release(r string) string {
	if r == "" {
		return ""
	}
	return ", zodan " + r
}

func schemaFlagFor(schema string) string {
	if schema == render.DefaultSchema {
		return ""
	}
	return " --schema " + schema
}

// shellQuote quotes s for a POSIX shell, so that a printed command can be
// pasted as it is.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
