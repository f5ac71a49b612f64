"""The report: provenance document, charts, sections, HTML and Markdown rendering."""
