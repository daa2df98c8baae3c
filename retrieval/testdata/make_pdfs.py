"""Generates the PDF fixtures of the retrieval tests with fpdf2 (PyPI
fpdf2==2.8.1), an independent PDF writer: run with
    /opt/retrieval/bin/python make_pdfs.py
in this directory. The expected text of each page is written next to the
PDF as JSON so the Go test compares against what the writer was told to
draw, not against the Go reader's own output."""
import json
from fpdf import FPDF

PAGES = [
    ["The first page talks about apples.", "Apples grow on trees in orchards."],
    ["The second page is about rivers.", "Rivers flow into the sea."],
    [],  # a page without text, like a scanned image
    ["The fourth page ends the document."],
]


def make(path, pages, title, compress):
    pdf = FPDF()
    pdf.set_compression(compress)
    pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for lines in pages:
        pdf.add_page()
        for line in lines:
            pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(path)


make("three_pages.pdf", PAGES, "Fruit and Water", True)
make("uncompressed.pdf", PAGES[:1], "Plain", False)
make("blank.pdf", [[]], "Nothing", True)
with open("pdf_expected.json", "w") as f:
    json.dump({"three_pages.pdf": {"title": "Fruit and Water", "pages": PAGES},
               "uncompressed.pdf": {"title": "Plain", "pages": PAGES[:1]},
               "blank.pdf": {"title": "Nothing", "pages": [[]]}}, f, indent=1)
