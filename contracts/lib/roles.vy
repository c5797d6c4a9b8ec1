# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Roles
@notice Two roles shared by the protocol contracts. `admin` lists assets and markets, wires
        contracts together and assigns roles; `risk_admin` changes risk parameters, always
        within the bounds each contract enforces. Both are meant to be a timelock or multisig
        in production.
@dev Admin transfer is two-step (propose, then accept by the new admin) so that a mistyped
     address cannot lock governance out.
@license MIT
"""

admin: public(address)
pending_admin: public(address)
risk_admin: public(address)


event AdminProposed:
    admin: indexed(address)
    proposed: indexed(address)


event AdminAccepted:
    previous: indexed(address)
    admin: indexed(address)


event RiskAdminSet:
    previous: indexed(address)
    risk_admin: indexed(address)


@deploy
def __init__(admin_: address):
    assert admin_ != empty(address), "roles: zero admin"
    self.admin = admin_
    self.risk_admin = admin_
    log AdminAccepted(previous=empty(address), admin=admin_)
    log RiskAdminSet(previous=empty(address), risk_admin=admin_)


@internal
@view
def _check_admin():
    assert msg.sender == self.admin, "roles: not admin"


@internal
@view
def _check_risk_admin():
    assert msg.sender == self.risk_admin, "roles: not risk admin"


@external
def propose_admin(new_admin: address):
    """
    @notice Start an admin transfer; `new_admin` must call `accept_admin`.
    @param new_admin The proposed admin (zero cancels a pending proposal).
    """
    self._check_admin()
    self.pending_admin = new_admin
    log AdminProposed(admin=msg.sender, proposed=new_admin)


@external
def accept_admin():
    """
    @notice Complete an admin transfer; callable only by the pending admin.
    """
    assert msg.sender == self.pending_admin, "roles: not pending admin"
    previous: address = self.admin
    self.admin = msg.sender
    self.pending_admin = empty(address)
    log AdminAccepted(previous=previous, admin=msg.sender)


@external
def set_risk_admin(new_risk_admin: address):
    """
    @notice Assign the risk-parameter role.
    @param new_risk_admin The new risk admin, not zero.
    """
    self._check_admin()
    assert new_risk_admin != empty(address), "roles: zero risk admin"
    previous: address = self.risk_admin
    self.risk_admin = new_risk_admin
    log RiskAdminSet(previous=previous, risk_admin=new_risk_admin)
