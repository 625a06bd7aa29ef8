#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Man pages made from the one source that cannot drift from the code: the public header (and
the version script, for when each function appeared) for section 3, the CLI's own --help for
section 1.

  gen-man.py list HEADER                    names of the section 3 files it makes, one a line
  gen-man.py lib HEADER MAP VERSION OUTDIR  libimgutil.3, a page per family, an alias page
                                            (".so") per other function of a family
  gen-man.py cli IMGUTIL OUTPUT             imgutil.1 from `IMGUTIL --help`

A family is a run of declarations with no blank line between them (with the comments and
constants just above it): the functions documented together in the header.
"""

import os
import re
import subprocess
import sys

DECL = re.compile(r'^IMG_API\b')
NAME_IN_DECL = re.compile(r'[ *]([A-Za-z_][A-Za-z0-9_]*)\(')
SECTION = re.compile(r'^/\* -+ (.*?) -+ \*/$')
HAVE = re.compile(r'^#define IMGUTIL_HAVE_')


def read_blocks(header):
    """The header after its opening comment, as (section, [lines]) blocks split at blank
    lines; a block holds whole comments and declarations."""
    with open(header, encoding='utf-8') as f:
        lines = f.read().split('\n')
    intro_end = next(i for i, l in enumerate(lines) if l.startswith(' */'))
    intro = [re.sub(r'^ ?\* ?', '', l) for l in lines[1:intro_end]]
    blocks, current, section = [], [], 'library'
    in_comment = False
    for line in lines[intro_end + 1:]:
        m = SECTION.match(line.strip())
        if m and not in_comment:
            if current:
                blocks.append((section, current))
                current = []
            section = m.group(1)
            continue
        if line.strip() == '' and not in_comment:
            if current:
                blocks.append((section, current))
                current = []
            continue
        current.append(line)
        if '/*' in line and '*/' not in line[line.index('/*'):]:
            in_comment = True
        elif in_comment and '*/' in line:
            in_comment = False
    if current:
        blocks.append((section, current))
    return intro, blocks


def families(header):
    """[(section, names, lines)]: each family's functions and the lines that document them
    (blocks without a declaration are carried to the next family of their section)."""
    intro, blocks = read_blocks(header)
    out, carried, carried_section = [], [], None
    for section, lines in blocks:
        if carried_section != section:
            carried = []
        names = []
        for i, line in enumerate(lines):
            if DECL.match(line):
                text = line
                j = i
                while not text.rstrip().endswith(';'):
                    j += 1
                    text += ' ' + lines[j].strip()
                names.append(NAME_IN_DECL.search(text.split('(')[0] + '(').group(1))
        if names:
            out.append((section, names, carried + lines))
            carried = []
        else:
            carried = carried + [''] + lines if carried else list(lines)
            carried_section = section
    return intro, out


def comment_text(lines):
    """The prose of the comments among `lines`, paragraph by paragraph."""
    text, in_comment = [], False
    for line in lines:
        s = line.strip()
        if s.startswith('/*'):
            in_comment = True
            s = s[2:]
        if in_comment:
            end = s.endswith('*/')
            s = s[:-2] if end else s
            s = re.sub(r'^\* ?', '', s)
            text.append(s.rstrip())
            if end:
                in_comment = False
                text.append('')
        elif s.startswith('#define') and '/*' in s and not HAVE.match(s):
            pass
    return text


def code_lines(lines):
    """Declarations, constants and types, without comments, IMG_API or HAVE macros."""
    out, in_comment = [], False
    for line in lines:
        s = line.rstrip()
        if s.strip().startswith('/*'):
            in_comment = not s.strip().endswith('*/')
            continue
        if in_comment:
            if s.strip().endswith('*/'):
                in_comment = False
            continue
        if HAVE.match(s):
            continue
        if s.startswith('IMG_API '):
            out.append(s[len('IMG_API '):])
        elif out and s.startswith(' ' * 8):
            out.append(s[len('IMG_API '):])  # a continuation, aligned under the removed word
        else:
            out.append(s)
    return out


def roff_escape(text):
    text = text.replace('\\', '\\e')
    return re.sub(r'^([.\'])', r'\\&\1', text)


def paragraphs(text_lines):
    """Comment prose as roff: paragraphs filled, indented or list lines kept as written."""
    out = []
    for line in text_lines:
        if not line.strip():
            if out and out[-1] != '.PP':
                out.append('.PP')
            continue
        if line.startswith(' ') or line.lstrip().startswith('- '):
            out.append('.br')
        out.append(roff_escape(line.strip()))
    while out and out[-1] == '.PP':
        out.pop()
    return out


def first_sentence(text_lines, fallback):
    prose = ' '.join(l.strip() for l in text_lines if l.strip())
    if not prose:
        return fallback
    m = re.match(r'(.+?[.:])(\s|$)', prose)
    s = (m.group(1) if m else prose).rstrip('.:')
    return s if len(s) <= 90 else s[:87].rsplit(' ', 1)[0] + '...'


def map_versions(path):
    """Function name -> version node ("IMGUTIL_1.1")."""
    versions, node = {}, None
    with open(path, encoding='utf-8') as f:
        for line in f:
            m = re.match(r'^\s*(IMGUTIL_[0-9.]+)\s*\{', line)
            if m:
                node = m.group(1)
                continue
            m = re.match(r'^\s*([a-z_][a-z0-9_]*);', line)
            if m and node:
                versions[m.group(1)] = node
    return versions


def header_line(name, section, version):
    return ('.TH %s %d "" "libimgutil %s" "libimgutil manual"\n.ad l' %
            (name.upper(), section, version))


def split_constants(lines):
    """(constants, functions): the lines before the comment that sits directly on the first
    declaration (flags, types: printed as written, comments and all), and the rest."""
    first = next(i for i, l in enumerate(lines) if DECL.match(l))
    start = first
    if first > 0 and lines[first - 1].strip().endswith('*/'):
        start = first - 1
        while start > 0 and not lines[start].strip().startswith('/*'):
            start -= 1
    return lines[:start], lines[start:]


def family_page(section, names, lines, version, versions, all_families):
    constants, functions = split_constants(lines)
    text = comment_text(functions)
    out = [header_line(names[0], 3, version), '.SH NAME',
           '%s \\- %s' % (', '.join(names), roff_escape(first_sentence(text, section)))]
    out += ['.SH SYNOPSIS', '.nf', '.B #include <imgutil.h>', '.PP']
    if constants:
        out += [roff_escape(l) for l in constants if not HAVE.match(l)] + ['']
    out += [roff_escape(l) for l in code_lines(functions)]
    out += ['.fi', '.PP', 'Link with \\fI\\-limgutil\\fP (\\fBpkg\\-config \\-\\-libs imgutil\\fP).',
            '.SH DESCRIPTION']
    out += paragraphs(text) or ['The constants and types above, as their comments say.']
    out += ['.PP', 'Failures return a negative errno and set the message that '
            '\\fBimg_last_error\\fP(3) returns; see \\fBlibimgutil\\fP(3) for the conventions '
            'that hold for every function (errors, ownership of results, threads).']
    later = [n for n in names if versions.get(n, 'IMGUTIL_1.0') != 'IMGUTIL_1.0']
    if later:
        out += ['.SH VERSIONS']
        for n in later:
            out.append('\\fB%s\\fP() first appeared in libimgutil %s; test for it with '
                       '\\fBIMGUTIL_HAVE_%s\\fP.' % (n, versions[n].split('_', 1)[1], n.upper()))
            out.append('.br')
        out.pop()
    see = ['libimgutil(3)'] + ['%s(3)' % f[1][0] for f in all_families
                               if f[0] == section and f[1][0] != names[0]]
    out += ['.SH SEE ALSO', ',\n'.join('.BR %s %s' % tuple(s.split('(')[0:1] + ['(' + s.split('(')[1]])
                                       for s in see)]
    return '\n'.join(out) + '\n'


def library_page(intro, fams, version):
    out = [header_line('libimgutil', 3, version), '.SH NAME',
           'libimgutil \\- read, write, inspect and convert virtual disk images',
           '.SH SYNOPSIS', '.nf', '.B #include <imgutil.h>', '.fi', '.PP',
           'Link with \\fI\\-limgutil\\fP (\\fBpkg\\-config \\-\\-cflags \\-\\-libs imgutil\\fP).',
           '.SH DESCRIPTION']
    out += paragraphs(intro)
    out += ['.SH FUNCTIONS']
    section = None
    for sec, names, _ in fams:
        if sec != section:
            out += ['.SS %s' % roff_escape(sec[0].upper() + sec[1:])]
            section = sec
        for n in names:
            out.append('.BR %s (3)' % n)
            out.append('.br')
    out += ['.SH SEE ALSO', '.BR imgutil (1),', '.BR qemu-img (1)']
    return '\n'.join(out) + '\n'


def lib_files(header):
    _, fams = families(header)
    files = ['libimgutil.3']
    for _, names, _ in fams:
        files += ['%s.3' % n for n in names]
    return files


def make_lib(header, mapfile, version, outdir):
    intro, fams = families(header)
    versions = map_versions(mapfile)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, 'libimgutil.3'), 'w', encoding='utf-8') as f:
        f.write(library_page(intro, fams, version))
    for section, names, lines in fams:
        with open(os.path.join(outdir, names[0] + '.3'), 'w', encoding='utf-8') as f:
            f.write(family_page(section, names, lines, version, versions, fams))
        for alias in names[1:]:
            with open(os.path.join(outdir, alias + '.3'), 'w', encoding='utf-8') as f:
                f.write('.so man3/%s.3\n' % names[0])


def make_cli(imgutil, output):
    help_text = subprocess.run([imgutil, '--help'], check=True, capture_output=True,
                               text=True).stdout
    version = help_text.split('\n', 1)[0].split()[2]
    lines = help_text.split('\n')

    def between(start, stop):
        i = next(k for k, l in enumerate(lines) if l.startswith(start)) + 1
        j = next((k for k in range(i, len(lines)) if stop and lines[k].startswith(stop)),
                 len(lines))
        return lines[i:j]

    syntax = [l.strip() for l in between('Command syntax:', 'Command parameters:') if l.strip()]
    rest = lines[lines.index('Command parameters:'):]
    out = [header_line('imgutil', 1, version), '.SH NAME',
           'imgutil \\- create, convert, check and inspect disk images (qemu\\-img\'s command line)',
           '.SH SYNOPSIS', '.nf', '.B imgutil [\\-h | \\-V]']
    out += ['.B imgutil %s' % roff_escape(s).replace('-', '\\-') for s in syntax]
    out += ['.fi', '.SH DESCRIPTION',
            '.B imgutil',
            'does what VM managers run qemu\\-img for, on top of libimgutil(3), and speaks',
            'qemu\\-img\'s command line: the same commands, options, output (human and JSON)',
            'and exit codes.',
            '.SH COMMANDS']
    for s in syntax:
        out += ['.TP', '.B %s' % roff_escape(s.split()[0]), roff_escape(s).replace('-', '\\-')]
    out += ['.SH OPTIONS', '.nf']
    out += [roff_escape(l).replace('-', '\\-') for l in rest]
    out += ['.fi', '.SH EXIT STATUS',
            '0 on success, 1 on an error, 2 when check found corruptions (or compare found a '
            'difference: 1), 3 when check found only leaks, 63 when the format cannot be '
            'checked, as qemu\\-img.',
            '.SH ENVIRONMENT', '.TP', '.B IMGUTIL_IO',
            '"uring" or "threads": the I/O engine (default: io_uring where the kernel allows).',
            '.SH SEE ALSO', '.BR libimgutil (3),', '.BR qemu\\-img (1)']
    with open(output, 'w', encoding='utf-8') as f:
        f.write('\n'.join(out) + '\n')


def main(argv):
    if len(argv) == 3 and argv[1] == 'list':
        print('\n'.join(lib_files(argv[2])))
    elif len(argv) == 6 and argv[1] == 'lib':
        make_lib(argv[2], argv[3], argv[4], argv[5])
    elif len(argv) == 4 and argv[1] == 'cli':
        make_cli(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
