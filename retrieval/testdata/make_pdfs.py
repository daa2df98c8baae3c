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


def write_raw_pdf(path, pages, title):
    """Writes a PDF by hand the way pdfTeX lays out text: words placed by
    TJ arrays whose numbers are the interword gaps (no space characters),
    kerning inside words, lines moved with Td, all in one BT block per
    page. Readers that ignore TJ offsets glue the words together."""
    objs = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append("<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>")
    # Declared widths (as TeX's embedded fonts have): 0.5 em per glyph.
    widths = " ".join(["500"] * (126 - 32 + 1))
    objs.append("<< /Type /Font /Subtype /Type1 /BaseFont /Times-Roman "
                f"/FirstChar 32 /LastChar 126 /Widths [{widths}] >>")
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 11 Tf", "72 720 Td"]
        for k, line in enumerate(lines):
            if k:
                ops.append("0 -13.6 Td")
            parts = []
            for w, word in enumerate(line.split(" ")):
                if w:
                    parts.append("-333")
                # kern between the first two letters, as TeX does
                parts.append(f"({word[:1]})15({word[1:]})" if len(word) > 1 else f"({word})")
            ops.append("[" + "".join(parts) + "] TJ")
        ops.append("ET")
        stream = "\n".join(ops)
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>")
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objs.append(f"<< /Title ({title}) >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info {len(objs)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    with open(path, "wb") as f:
        f.write(out)


TEX_PAGES = [
    ["Kerned words are placed by offsets", "and lines are moved with Td."],
    ["A second page follows here."],
]
write_raw_pdf("tex_style.pdf", TEX_PAGES, "TeX Style")
with open("pdf_expected.json") as f:
    expected = json.load(f)
expected["tex_style.pdf"] = {"title": "TeX Style", "pages": TEX_PAGES}
with open("pdf_expected.json", "w") as f:
    json.dump(expected, f, indent=1)
