"""POST a message to a chat webhook (Slack incoming webhook, Teams connector): JSON ``{"text": ...}``.

The URL may carry a secret token, so no message, log line or exception raised here ever contains it.
Standard library only: one small POST does not justify an HTTP dependency.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class AlertDeliveryError(RuntimeError):
    """The webhook refused the message or could not be reached; one line, never the URL."""


def post_text(url: str, text: str, timeout_s: float = 10.0, attempts: int = 3, backoff_s: float = 1.0) -> None:
    """Send ``{"text": text}``; 5xx, 429, timeouts and connection errors are retried ``attempts`` times in all
    (``backoff_s`` doubling), a 4xx is raised at once: the URL or the receiver's setup is wrong."""
    body = json.dumps({"text": text}).encode()
    last = "no attempt"
    if not url.lower().startswith(("http://", "https://")):
        raise AlertDeliveryError("TAUXCHARGE_ALERT_WEBHOOK_URL is not an http(s) URL.")
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
            return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code} {error.reason}"
            if error.code not in RETRIED_STATUSES:
                raise AlertDeliveryError(
                    f"The alert webhook refused the message ({last}): check TAUXCHARGE_ALERT_WEBHOOK_URL and the "
                    "receiver's configuration."
                ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            last = f"{type(reason).__name__}: {reason}"
    raise AlertDeliveryError(
        f"The alert webhook did not accept the message after {max(1, attempts)} attempts ({last}): check that the "
        "receiver is reachable (TAUXCHARGE_ALERT_WEBHOOK_URL)."
    )
