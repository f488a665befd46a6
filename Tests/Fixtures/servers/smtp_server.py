#!/usr/bin/env python3
"""A real SMTP server on 127.0.0.1 for the email handler's tests (Shardwork's own fixture), built on
aiosmtpd (PyPI; scripts/install-dependencies test installs it).

It binds a free port, writes the port to --port-file, exits when the process --parent-pid names is
gone, requires AUTH with --username and --password,
and appends one JSON line per accepted message to --log: envelope sender and recipients, the login
used, and the parsed headers and text body. --tls chooses the transport: "none", "starttls"
(STARTTLS required before AUTH) or "implicit" (TLS from the first byte, like port 465); both TLS
modes need --cert and --key.
"""
import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import ssl
import sys
import threading
import time

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:
    sys.stderr.write("aiosmtpd is not installed for this python3: run `scripts/install-dependencies test` "
                     "(or `python3 -m pip install aiosmtpd`)\n")
    sys.exit(3)


def watch_parent(parent):
    """Exits when the test process that started the server is gone (the server is then re-parented)."""
    if parent is None:
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main():
    # A child of a Swift process may inherit a mask that blocks SIGTERM: unblock, so stopping works.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    options = parser.parse_args()
    watch_parent(options.parent_pid)

    context = None
    if options.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options.cert, options.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = login == options.username and password == options.password
        if ok:
            session.shardwork_login = login
        return AuthResult(success=ok, handled=False)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
            body = message.get_body(preferencelist=("plain", "html"))
            record = {
                "mailFrom": envelope.mail_from,
                "rcptTos": envelope.rcpt_tos,
                "login": getattr(session, "shardwork_login", None),
                "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                "from": str(message["From"] or ""),
                "to": str(message["To"] or ""),
                "cc": str(message["Cc"] or ""),
                "bcc": str(message["Bcc"] or ""),
                "subject": str(message["Subject"] or ""),
                "date": str(message["Date"] or ""),
                "contentType": body.get_content_type() if body is not None else "",
                "body": body.get_content() if body is not None else "",
            }
            with open(options.log, "a") as log:
                log.write(json.dumps(record) + "\n")
            return "250 OK"

    def factory():
        return SMTP(
            Handler(),
            hostname="shardwork-test-smtp",
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=options.tls == "starttls",
            tls_context=context if options.tls == "starttls" else None,
            require_starttls=options.tls == "starttls",
        )

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            factory, "127.0.0.1", 0, ssl=context if options.tls == "implicit" else None)
        port = server.sockets[0].getsockname()[1]
        temporary = options.port_file + ".tmp"
        with open(temporary, "w") as file:
            file.write(str(port))
        os.rename(temporary, options.port_file)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
