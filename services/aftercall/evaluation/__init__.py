"""Evidence for buyers and sites: `aftercall eval` (quality on gold calls and public sets) and `aftercall bench`
(speed, memory, concurrency). Both write a JSON report and a self-contained HTML report with plots."""
