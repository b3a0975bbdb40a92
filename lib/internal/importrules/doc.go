// Package importrules holds the test that keeps docs/architecture.md true:
// it lists every package of the workspace with its imports and fails when
// one crosses a boundary the document draws. It has no code of its own.
package importrules
