"""Paging through HubEE notifications, which have no cursor.

HubEE answers "the first ``maxResult`` pending notifications" and keeps serving a notification
until it is deleted. A reader that does not delete as it goes would get the same page forever,
so paging stops on a short page, on a page that brings nothing new, or after ``max_pages``.
"""

from __future__ import annotations

import logging

from qfbridge.hubee.models import Notification

logger = logging.getLogger("qfbridge.hubee")


class NotificationPager:
    """Decides, page after page, which notifications are new and whether to ask for another page."""

    def __init__(self, max_result: int, max_pages: int) -> None:
        self._max_result = max_result
        self._max_pages = max_pages
        self._seen: set[str] = set()
        self.pages = 0
        self.done = False

    def accept(self, page: list[Notification]) -> list[Notification]:
        """The notifications of ``page`` not yielded before (duplicates within the page included)."""
        self.pages += 1
        fresh: list[Notification] = []
        for notification in page:
            if notification.id not in self._seen:
                self._seen.add(notification.id)
                fresh.append(notification)
        full = len(page) >= self._max_result
        if not full or not fresh:
            self.done = True
        elif self.pages >= self._max_pages:
            self.done = True
            logger.warning("hubee notification paging stopped at max_pages=%d", self._max_pages)
        return fresh
