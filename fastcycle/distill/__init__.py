"""`fastcycle distill`: a trained generator (the teacher) distilled into a cheaper one (the student)."""
