package xmppserver

import (
	"encoding/xml"
	"io"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

// Namespaces of the IQs the server answers itself.
const (
	nsRoster  = "jabber:iq:roster"
	nsPing    = "urn:xmpp:ping"
	nsSession = "urn:ietf:params:xml:ns:xmpp-session"
)

// handle is called by the read loop for each top-level element, with the
// rest of the element in t. It never writes to the socket itself (answers
// go through the session's queue) and never blocks on another session.
func (c *session) handle(t xml.TokenReader, start *xml.StartElement) error {
	c.nc.resetRead()
	if start.Name.Space != stanza.NSClient {
		return c.fail(&stream.UnsupportedStanzaType, "unsupported top-level element "+start.Name.Space+" "+start.Name.Local)
	}
	switch start.Name.Local {
	case "message":
		return c.handleMessage(t, start)
	case "iq":
		return c.handleIQ(t, start)
	case "presence":
		// Not routed: no rosters, no subscriptions. The rest is skipped.
		return nil
	default:
		return c.fail(&stream.UnsupportedStanzaType, "unsupported stanza "+start.Name.Local)
	}
}

func (c *session) handleMessage(t xml.TokenReader, start *xml.StartElement) error {
	toks, err := readStanza(t, start, c.jid)
	if err != nil {
		return err
	}
	typ := attrValue(start.Attr, "type")
	id := attrValue(start.Attr, "id")
	toAttr := attrValue(start.Attr, "to")

	to := c.jid.Bare() // RFC 6120 §8.1.1.1: no 'to' means the sender's account
	if toAttr != "" {
		to, err = jid.Parse(toAttr)
		if err != nil {
			c.bounce(typ, id, c.srv.domain, stanza.Modify, stanza.JIDMalformed, "malformed to")
			return nil
		}
	}
	switch {
	case to.Domainpart() != c.srv.domain.Domainpart():
		c.bounce(typ, id, to, stanza.Cancel, stanza.RemoteServerNotFound, "foreign domain")
		return nil
	case to.Localpart() == "":
		c.bounce(typ, id, to, stanza.Cancel, stanza.ServiceUnavailable, "message to the server")
		return nil
	}
	// RFC 6121 §8.5.3.2.1: chat and normal messages for an unavailable
	// resource go to the account's other resources.
	fallback := typ == "" || typ == "chat" || typ == "normal"
	if target := c.srv.lookup(to, fallback); target != nil && target.enqueue(toks) {
		c.log.Debug("xmpp message routed", "to", target.jid.String(), "id", id)
		return nil
	}
	c.bounce(typ, id, to, stanza.Cancel, stanza.ServiceUnavailable, "recipient offline")
	return nil
}

// bounce returns an error message to the sender, unless the message was an
// error itself (answering errors with errors could loop).
func (c *session) bounce(typ, id string, from jid.JID, errType stanza.ErrorType, cond stanza.Condition, why string) {
	log := c.log.With("to", from.String(), "id", id, "why", why)
	if typ == string(stanza.ErrorMessage) {
		log.Debug("xmpp undeliverable error message dropped")
		return
	}
	log.Debug("xmpp message bounced", "condition", string(cond))
	msg := stanza.Message{
		XMLName: xml.Name{Space: stanza.NSClient, Local: "message"},
		ID:      id,
		From:    from,
		To:      c.jid,
		Type:    stanza.ErrorMessage,
	}
	toks, err := xmlstream.ReadAll(msg.Wrap(stanza.Error{Type: errType, Condition: cond}.TokenReader()))
	if err != nil {
		log.Error("xmpp bounce not built", "err", err)
		return
	}
	c.enqueue(toks)
}

// handleIQ answers IQs itself: roster get, ping and session get/set
// addressed to the server or the user's own account get an empty result,
// every other get/set service-unavailable. IQs are not routed to other
// users (the sniper does not need it).
func (c *session) handleIQ(t xml.TokenReader, start *xml.StartElement) error {
	toks, err := readStanza(t, start, c.jid)
	if err != nil {
		return err
	}
	typ := attrValue(start.Attr, "type")
	if typ != string(stanza.GetIQ) && typ != string(stanza.SetIQ) {
		return nil // results and errors: the server asked nothing
	}
	var payload xml.Name
	for _, tok := range toks[1:] {
		if se, ok := tok.(xml.StartElement); ok {
			payload = se.Name
			break
		}
	}

	resp := stanza.IQ{
		XMLName: start.Name,
		ID:      attrValue(start.Attr, "id"),
		To:      c.jid,
		Type:    stanza.ResultIQ,
	}
	toServer := true
	if toAttr := attrValue(start.Attr, "to"); toAttr != "" {
		to, err := jid.Parse(toAttr)
		toServer = err == nil && (to.Equal(c.srv.domain) || to.Equal(c.jid.Bare()))
		if err == nil {
			resp.From = to
		}
	}

	var answer xml.TokenReader
	switch {
	case toServer && payload.Space == nsRoster && typ == string(stanza.GetIQ):
		answer = resp.Wrap(xmlstream.Wrap(nil, xml.StartElement{Name: payload}))
	case toServer && (payload.Space == nsPing || payload.Space == nsSession):
		answer = resp.Wrap(nil)
	default:
		c.log.Debug("xmpp iq not supported", "payload", payload.Space+" "+payload.Local, "type", typ)
		resp.Type = stanza.ErrorIQ
		answer = resp.Wrap(stanza.Error{Type: stanza.Cancel, Condition: stanza.ServiceUnavailable}.TokenReader())
	}
	out, err := xmlstream.ReadAll(answer)
	if err != nil {
		return err
	}
	c.enqueue(out)
	return nil
}

// readStanza reads the rest of a stanza whose start element the read loop
// already consumed and returns all of its tokens, copied, ready to be written to
// another stream: 'from' is replaced by the sender's real JID, and
// namespace declaration attributes are dropped (the encoder declares the
// namespaces of the element names itself; copying them would duplicate
// them).
func readStanza(t xml.TokenReader, start *xml.StartElement, from jid.JID) ([]xml.Token, error) {
	first := start.Copy()
	attrs := first.Attr[:0]
	for _, a := range first.Attr {
		if a.Name.Space == "" && a.Name.Local == "from" || isNSDecl(a) {
			continue
		}
		attrs = append(attrs, a)
	}
	first.Attr = append(attrs, xml.Attr{Name: xml.Name{Local: "from"}, Value: from.String()})
	toks := []xml.Token{first}
	for {
		tok, err := t.Token()
		if tok != nil {
			tok = xml.CopyToken(tok)
			if se, ok := tok.(xml.StartElement); ok {
				attrs := se.Attr[:0]
				for _, a := range se.Attr {
					if !isNSDecl(a) {
						attrs = append(attrs, a)
					}
				}
				se.Attr = attrs
				tok = se
			}
			toks = append(toks, tok)
		}
		if err == io.EOF {
			return toks, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func isNSDecl(a xml.Attr) bool {
	return a.Name.Space == "" && a.Name.Local == "xmlns" || a.Name.Space == "xmlns"
}

func attrValue(attrs []xml.Attr, local string) string {
	for _, a := range attrs {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}
