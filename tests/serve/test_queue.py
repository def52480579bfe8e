from gyre.serve._queue import DeadlineQueue


def test_items_come_out_by_deadline_then_arrival() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push(3.0, 1, "c")
    queue.push(1.0, 2, "a")
    queue.push(1.0, 1, "b")
    assert (len(queue), queue.rows, queue.earliest_deadline()) == (3, 4, 1.0)
    assert [queue.pop(), queue.pop(), queue.pop()] == ["a", "b", "c"]
    assert queue.rows == 0


def test_take_gathers_fitting_items_within_max_rows_and_keeps_the_rest() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    for i, name in enumerate(["x1", "y1", "x2", "x3", "x4"]):
        queue.push(float(i), 2, name)
    batch = queue.take(6, lambda first, item: item[0] == first[0])
    assert batch == ["x1", "x2", "x3"]
    assert sorted(queue) == ["x4", "y1"]
    assert queue.rows == 4
    assert queue.pop() == "y1"  # skipped items keep their place


def test_the_first_item_is_taken_even_when_larger_than_max_rows() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push(0.0, 50, "big")
    queue.push(1.0, 1, "small")
    assert queue.take(8, lambda a, b: True) == ["big"]
    assert queue.rows == 1
