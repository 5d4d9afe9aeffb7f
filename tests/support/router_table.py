"""The Router Table of router.md §10, as an administrator would type it.

Used with the §10 Directory (:mod:`tests.support.directory`) by the Router's
worked examples and by the CLI tests; the text is kept byte for byte, since
the examples' expected routes follow from each line's form.
"""

from __future__ import annotations

SPEC_TABLE = """\
Relay:friend.com = friend.com._via
Relay:friend2.com = friend2.com@firewall.friend2.com._via
Relay:client.com = client.com@relay.domain.25._via
NoRelay:filtered.com = filtered.com@127.0.0.1.26._via
RelayAll:<report-*@main.dom> = report-*@reports.example
dd-customer.com = dd-customer.local
customer2.com = dd-customer@client.dom.domain
www.client.dom = client.dom
Access:*.domain.dom = *@domain.dom
<LoginPage%*@domain.dom> = *@domain.dom
Access:*.main.dom = *@fict
<LoginPage%*@fict> = *@main.dom
<info@domain.dom> = alice@domain.dom
Signal:sipfriend.com = sipfriend.com@sip.provider.com.5060._via
"""
