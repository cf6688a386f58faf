package flist

import "sort"

// Node is a tree as a packer builds it, before it is laid out in the
// format's order by Flatten.
type Node struct {
	Entry    Entry // attributes; Name, FirstChild, NumChildren and Link are set by Flatten
	Name     string
	Children []*Node // directories
	LinkTo   *Node   // hard links: the node holding the content (must come earlier in the layout)
	// Source is the packer's handle for the node (a path); Flatten ignores it.
	Source string
	index  uint64
}

// Flatten lays the tree out breadth-first with children sorted by name and
// fills in the structural fields. It returns the entries and the nodes in
// the same order. Hard links whose target would come later
// in the layout are swapped so that the earlier name holds the content.
func Flatten(root *Node) ([]Entry, []*Node) {
	order := []*Node{root}
	for i := 0; i < len(order); i++ {
		n := order[i]
		sort.Slice(n.Children, func(a, b int) bool { return n.Children[a].Name < n.Children[b].Name })
		order = append(order, n.Children...)
	}
	for i, n := range order {
		n.index = uint64(i)
	}
	// The first name of a hard-linked inode in layout order holds the content.
	for _, n := range order {
		if t := n.LinkTo; t != nil && t.index > n.index {
			n.Entry, t.Entry = t.Entry, n.Entry
			n.LinkTo, t.LinkTo = nil, n
			for _, o := range order {
				if o.LinkTo == t {
					o.LinkTo = n
				}
			}
		}
	}
	out := make([]Entry, len(order))
	next := uint64(1)
	for i, n := range order {
		e := n.Entry
		e.Name = n.Name
		e.Link = -1
		if n.LinkTo != nil {
			e = Entry{Name: n.Name, Link: int64(n.LinkTo.index)}
		} else if e.Kind() == KindDir {
			e.FirstChild, e.NumChildren = next, uint64(len(n.Children))
			next += e.NumChildren
		}
		out[i] = e
	}
	return out, order
}
