package cmd

import (
	"fmt"
	"os"

	"github.com/spf13/cobra/doc"
)

// WriteDocs writes one Markdown page per command into dir. Pages carry no
// date, so regenerating unchanged commands changes nothing.
func WriteDocs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root := New()
	root.DisableAutoGenTag = true
	root.InitDefaultCompletionCmd()
	if err := doc.GenMarkdownTree(root, dir); err != nil {
		return fmt.Errorf("writing docs: %w", err)
	}
	return nil
}
