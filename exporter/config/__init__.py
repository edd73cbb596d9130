"""Configuration and every input file: the validated settings, the field tables the
command line's flags come from, the web config, and the one rule for reading a file
(regular files only, bounded bytes, nesting and counts).
"""
