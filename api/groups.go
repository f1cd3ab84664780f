package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"sniper/jetstream"
	"sniper/messages"
)

// maxGroupItems bounds a group: its actor decides for all of them.
const maxGroupItems = 100

type groupRequest struct {
	Group string           `json:"group"`
	Win   int              `json:"win"`
	Items []groupItemInput `json:"items"`
}

type groupItemInput struct {
	Item      string          `json:"item"`
	StopPrice json.RawMessage `json:"stop_price"`
}

// GroupView is a snipe group as the API shows it.
type GroupView struct {
	Group   string `json:"group"`
	Win     int    `json:"win"`
	Snipers []View `json:"snipers"`
}

// groups serves POST /api/groups: join several items as one group that
// wins at most Win of them. Every member's start goes into the log as its
// own cmd.start, fenced like a join, naming the group and its win; the
// group's actor decides from there.
func (s *Server) groups(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	var req groupRequest
	if !decodeBody(w, r, &req) {
		return
	}
	stops, err := req.validate()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	for _, it := range req.Items {
		if snap, found := s.View.Get(it.Item); found && snap.Group != req.Group {
			msg := fmt.Sprintf("%s is already sniped on its own", it.Item)
			if snap.Group != "" {
				msg = fmt.Sprintf("%s is already in group %s", it.Item, snap.Group)
			}
			writeError(w, http.StatusConflict, msg+": an item belongs to one sniper")
			return
		}
	}
	if !s.available(w, "join group "+req.Group) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout())
	defer cancel()
	status := http.StatusOK // every member existed already: a repeated request
	for i, it := range req.Items {
		c := messages.NewStart(it.Item, stops[i])
		c.Group, c.Win = req.Group, req.Win
		_, err := s.Log.Append(ctx, messages.Subject(it.Item, messages.KindCmd, messages.TypeStart), c,
			jetstream.WithMsgID(it.Item+"/start"), jetstream.FirstOfSubject())
		switch {
		case errors.Is(err, jetstream.ErrExists):
		case err != nil:
			s.unavailable(w, "join group "+req.Group, err)
			return
		default:
			status = http.StatusCreated
		}
	}
	out := GroupView{Group: req.Group, Win: req.Win}
	for _, it := range req.Items {
		snap, err := s.View.Wait(ctx, it.Item, func(messages.DecisionEvent) bool { return true })
		if err != nil {
			status = http.StatusAccepted // in the log, not decided yet
			out.Snipers = append(out.Snipers, View{Item: it.Item, Group: req.Group})
			continue
		}
		out.Snipers = append(out.Snipers, viewOf(snap))
	}
	WriteJSON(w, status, out)
}

func (req groupRequest) validate() ([]int64, error) {
	if err := messages.ValidItem(req.Group); err != nil {
		return nil, fmt.Errorf("group: %w", err)
	}
	if len(req.Items) == 0 || len(req.Items) > maxGroupItems {
		return nil, fmt.Errorf("items must list 1 to %d items, got %d", maxGroupItems, len(req.Items))
	}
	if req.Win < 1 || req.Win > len(req.Items) {
		return nil, fmt.Errorf("win must be 1 to the number of items (%d), got %d", len(req.Items), req.Win)
	}
	seen := map[string]bool{}
	stops := make([]int64, len(req.Items))
	for i, it := range req.Items {
		if err := messages.ValidItem(it.Item); err != nil {
			return nil, fmt.Errorf("items[%d]: %w", i, err)
		}
		if seen[strings.ToLower(it.Item)] {
			return nil, fmt.Errorf("items[%d]: %s is listed twice", i, it.Item)
		}
		seen[strings.ToLower(it.Item)] = true
		stop, err := parseStopPrice(it.StopPrice)
		if err != nil {
			return nil, fmt.Errorf("items[%d] (%s): %w", i, it.Item, err)
		}
		stops[i] = stop
	}
	return stops, nil
}

// group serves GET /api/groups/{group}: the group's members.
func (s *Server) group(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET")
		return
	}
	name := r.PathValue("group")
	out := GroupView{Group: name}
	for _, d := range s.View.List() {
		if d.Group == name {
			out.Snipers = append(out.Snipers, viewOf(d))
			out.Win = max(out.Win, d.GroupWin)
		}
	}
	if len(out.Snipers) == 0 {
		writeError(w, http.StatusNotFound, "no group "+name)
		return
	}
	WriteJSON(w, http.StatusOK, out)
}
