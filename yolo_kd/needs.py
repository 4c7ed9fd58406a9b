"""Declared needs: what each KD term reads from a teacher/student pair, and what a pair offers.

A method lists, per term, the things it reads (`Method.needs`); `compat` checks exactly those against the pair:
a term whose needs the pair lacks is dropped with one log line (LD between a DFL teacher and a reg_max = 1 student),
and a method is refused only when none of its terms can apply or it cannot drop terms (`Method.drops_terms`).
Features are always offered (levels and widths are checked elsewhere), so terms on features list no needs.
"""

from __future__ import annotations

from .taps import TapShapes

SCORES = "scores"  # the teacher's class logits (N, nc, A) on the student's anchors
DFL_BINS = "dfl_bins"  # DFL box distributions on both heads, with the same bins (LD on bins)
TEACHER_DFL = "teacher_dfl"  # the teacher's DFL box distributions (compared with teacher-head outputs: crosskd)
SAME_BOXES = "same_boxes"  # raw box outputs in one encoding on both heads (equal reg_max)
DECODED_BOXES = "decoded_boxes"  # boxes decoded to distances (any head: DFL by expectation, reg_max 1 directly)
ONE2ONE = "one2one"  # a one-to-one branch on both heads (YOLO26)

WHY = {
    DFL_BINS: "needs DFL bins with the same reg_max on both heads",
    TEACHER_DFL: "needs a teacher with DFL bins (reg_max > 1)",
    SAME_BOXES: "needs box outputs in the same encoding (same reg_max) on both heads",
    ONE2ONE: "needs a one-to-one branch (YOLO26) on both heads",
}


def offers(student: TapShapes, teacher: TapShapes) -> set[str]:
    """What a student/teacher pair offers the KD terms, from their tap shapes."""
    found = {SCORES, DECODED_BOXES}
    if student.reg_max == teacher.reg_max:
        found.add(SAME_BOXES)
        if student.reg_max > 1:
            found.add(DFL_BINS)
    if teacher.reg_max > 1:
        found.add(TEACHER_DFL)
    if student.one2one and teacher.one2one:
        found.add(ONE2ONE)
    return found


def missing(needs: dict[str, frozenset[str]], offered: set[str]) -> dict[str, str]:
    """Terms whose needs are not offered -> why, in words (the first missing need)."""
    return {term: WHY.get(min(need - offered), min(need - offered)) for term, need in needs.items() if need - offered}


def describe(student: TapShapes, teacher: TapShapes) -> str:
    """The facts a drop line quotes: each head's reg_max and whether it has a one-to-one branch."""
    def head(s: TapShapes) -> str:
        return f"reg_max={s.reg_max}" + (", one2one" if s.one2one else "")

    return f"teacher {head(teacher)}, student {head(student)}"
