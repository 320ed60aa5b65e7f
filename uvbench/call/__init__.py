"""One call: REST client, websocket session, the script's interpreter, and the call's timeline."""
