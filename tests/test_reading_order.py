"""The column-aware recursive XY-cut that orders layout targets and, later, a document's items."""

from docvlm.converters.reading_order import reading_order


def test_one_column_reads_top_to_bottom():
    boxes = [(10, 300, 90, 350), (10, 10, 90, 50), (10, 100, 90, 200)]
    assert reading_order(boxes) == [1, 2, 0]


def test_two_columns_read_down_the_left_then_the_right_even_where_rows_align():
    # rows of the two columns at the same heights: a plain Y-first cut would read across the columns
    left = [(10, 10, 45, 20), (10, 30, 45, 40), (10, 50, 45, 60)]
    right = [(55, 10, 90, 20), (55, 30, 90, 40), (55, 50, 90, 60)]
    boxes = [right[1], left[2], right[0], left[0], right[2], left[1]]
    order = [boxes[i] for i in reading_order(boxes)]
    assert order == left + right


def test_full_width_title_and_footer_bracket_the_columns():
    title, footer = (10, 0, 90, 5), (10, 95, 90, 100)
    left = [(10, 10, 45, 30), (10, 40, 45, 60)]
    right = [(55, 10, 90, 50)]
    middle = (10, 65, 90, 70)  # a full-width figure between two two-column stretches
    lower = [(10, 75, 45, 90), (55, 75, 90, 90)]
    boxes = [footer, *lower[::-1], right[0], middle, left[1], title, left[0]]
    order = [boxes[i] for i in reading_order(boxes)]
    assert order == [title, *left, *right, middle, *lower, footer]


def test_a_column_with_a_lone_box_stays_a_column():
    # the left column's first box has no neighbour on its right: still read before the rest of the left column
    boxes = [(55, 40, 90, 60), (10, 0, 45, 20), (10, 70, 45, 90), (55, 65, 90, 85)]
    assert reading_order(boxes) == [1, 2, 0, 3]


def test_overlapping_boxes_fall_back_to_top_then_left_and_nothing_is_lost():
    boxes = [(30, 10, 80, 60), (0, 0, 50, 50), (20, 20, 70, 70)]
    assert reading_order(boxes) == [1, 0, 2]
    assert reading_order([]) == []
